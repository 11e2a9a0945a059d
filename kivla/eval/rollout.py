"""Closed-loop evaluation in the built-in world: success, follow rate and episode length.

A `Policy` maps a batch of observations to action chunks. `evaluate` runs it on `VectorEnv`s in
receding-horizon fashion: execute the first `execute_steps` actions of each chunk, then replan;
an episode ends on success or at the env's step limit. Episodes are grouped by (split, family) so
every family gets the same number of episodes, and each episode's seed is a pure function of
(seed, split, family, index), disjoint from the dataset generator's seeds.

Follow rate (did the policy act on what the instruction names), from env state:
- The *engaged* object of an episode is the first object the end effector acts on: the first
  object that is grasped or has moved more than ENGAGE_MOVE from its start (objects only move
  when held or pushed; the threshold ignores a graze while pushing a neighbour), or that the end
  effector hovers over low (planar distance < OBJECT_RADIUS and height < REACH_MAX_HEIGHT, the
  height under which `reach` counts). Ties in one step go to the object nearest the end effector.
- place_on, place_in, reach: followed iff the engaged object is the instruction's target.
- push: followed iff the engaged object is the target and, at the end of the episode, the
  target's displacement from its start has its largest component along the named direction
  (among left/right/up/down) and that component is at least FOLLOW_PUSH_MIN.
An episode in which nothing is engaged is not followed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kivla.data.world_env import ACTION_DIM, VectorEnv, WorldConfig
from kivla.data.world_scene import OBJECT_RADIUS
from kivla.data.world_tasks import DIRECTIONS, FAMILIES, REACH_MAX_HEIGHT, SPLITS
from kivla.io import atomic_file, write_json, write_text

FOLLOW_PUSH_MIN = 0.05  # table units the target must move along the named direction
ENGAGE_MOVE = 0.02  # displacement from its start that makes an object engaged
EVAL_SALT = 7_311_977  # keeps evaluation seeds apart from dataset seeds (SeedSequence entropy)


@runtime_checkable
class Policy(Protocol):
    """obs {"image": uint8 [B,S,S,3], "state": float32 [B,S_dim], "instruction": list[str]} -> [B, H, D]."""

    def act(self, obs: dict[str, Any]) -> np.ndarray: ...


@dataclass
class EvalConfig:
    episodes: int = 40  # per split, spread evenly over the families
    splits: tuple[str, ...] = ("train", "ood")
    families: tuple[str, ...] = FAMILIES
    num_envs: int = 16  # envs stepped together (one policy call per replan)
    execute_steps: int = 10  # actions executed from each chunk before replanning
    max_steps: int = 200  # episode step limit
    image_size: int = 64
    seed: int = 0
    videos: int = 2  # rollouts saved as GIF per split (the first episode of the first families)
    privileged_state: bool = False  # the state carries the target's and goal's xy (WorldConfig)

    def __post_init__(self) -> None:
        self.splits, self.families = tuple(self.splits), tuple(self.families)
        for name in ("episodes", "num_envs", "execute_steps", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"EvalConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if self.videos < 0:
            raise ValueError(f"EvalConfig.videos: expected >= 0, got {self.videos}")
        if not self.splits or any(s not in SPLITS for s in self.splits):
            raise ValueError(f"EvalConfig.splits: expected a non-empty subset of {SPLITS}, got {self.splits}")
        if not self.families or any(f not in FAMILIES for f in self.families):
            raise ValueError(
                f"EvalConfig.families: expected a non-empty subset of {FAMILIES}, got {self.families}"
            )
        WorldConfig(image_size=self.image_size, max_steps=self.max_steps)  # validates both


@dataclass
class EpisodeResult:
    split: str
    family: str
    seed: int
    instruction: str
    success: bool
    followed: bool
    engaged: int  # object id of the first engaged object, -1 when none
    length: int  # env steps until success or the step limit


@dataclass
class EvalResult:
    config: dict[str, Any]
    episodes: list[EpisodeResult] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """{split: {success_rate, follow_rate, mean_length, episodes, families: {family: {...}}}}."""
        out: dict[str, Any] = {}
        for split in dict.fromkeys(e.split for e in self.episodes):
            rows = [e for e in self.episodes if e.split == split]
            out[split] = _rates(rows)
            out[split]["families"] = {
                fam: _rates([e for e in rows if e.family == fam])
                for fam in dict.fromkeys(e.family for e in rows)
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "summary": self.summary(),
            "videos": self.videos,
            "episodes": [asdict(e) for e in self.episodes],
        }

    def markdown(self, title: str = "Closed-loop evaluation") -> str:
        head = "| split | family | episodes | success (95% interval) | follow | mean length |"
        lines = [f"## {title}", "", head, "|---|---|---:|---:|---:|---:|"]
        for split, s in self.summary().items():
            for fam, f in s["families"].items():
                lines.append(_row(split, fam, f))
            lines.append(_row(f"**{split}**", "**all**", s))
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | Path) -> Path:
        """`eval.json` and `eval.md` in out_dir (atomic writes)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "eval.json", self.to_dict())
        write_text(out_dir / "eval.md", self.markdown())
        return out_dir / "eval.json"


def success_interval(successes: int, episodes: int) -> list[float]:
    """[low, high]: the 95% Wilson interval of a success rate (48 episodes at 50%: 36-64%)."""
    from scipy.stats import binomtest

    if episodes < 1:
        return [float("nan"), float("nan")]
    ci = binomtest(successes, episodes).proportion_ci(0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def _rates(rows: list[EpisodeResult]) -> dict[str, Any]:
    n = len(rows)
    return {
        "episodes": n,
        "success_rate": float(np.mean([e.success for e in rows])) if n else float("nan"),
        "success_ci95": success_interval(sum(e.success for e in rows), n),
        "follow_rate": float(np.mean([e.followed for e in rows])) if n else float("nan"),
        "mean_length": float(np.mean([e.length for e in rows])) if n else float("nan"),
    }


def _interval(r: dict[str, Any]) -> str:
    low, high = r.get("success_ci95", (float("nan"), float("nan")))
    return f"{low:.0%}–{high:.0%}"


def _row(split: str, family: str, r: dict[str, Any]) -> str:
    return (
        f"| {split} | {family} | {r['episodes']} | {r['success_rate']:.1%} ({_interval(r)}) "
        f"| {r['follow_rate']:.1%} | {r['mean_length']:.1f} |"
    )


def episode_seed(seed: int, split: str, family: str, index: int) -> int:
    """The env seed of one evaluation episode."""
    entropy = [EVAL_SALT, seed, SPLITS.index(split), FAMILIES.index(family), index]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


class FollowTracker:
    """Watches one env's scene step by step and decides whether the episode followed the instruction."""

    def __init__(self, env) -> None:
        self.env = env
        self.start = env.scene.positions.copy()
        self.engaged = -1

    def update(self) -> None:
        scene = self.env.scene
        if self.engaged < 0:
            moved = np.linalg.norm(scene.positions - self.start, axis=1) > ENGAGE_MOVE
            dist = np.linalg.norm(scene.positions - scene.ee[:2], axis=1)
            hover = (dist < OBJECT_RADIUS) & (scene.ee[2] < REACH_MAX_HEIGHT)
            candidates = moved | hover
            if scene.held >= 0:
                candidates[scene.held] = True
            if candidates.any():
                self.engaged = int(np.flatnonzero(candidates)[np.argmin(dist[candidates])])

    def followed(self) -> bool:
        task, scene = self.env.task, self.env.scene
        if self.engaged != task.target:
            return False
        if task.family != "push":
            return True
        moved = scene.positions[task.target] - np.asarray(task.start)
        along = {name: float(moved @ np.asarray(d)) for name, d in DIRECTIONS.items()}
        best = max(along, key=along.get)
        return best == task.direction and along[best] >= FOLLOW_PUSH_MIN


def check_chunk(actions: np.ndarray, batch: int, action_dim: int = ACTION_DIM) -> np.ndarray:
    """ValueError unless actions is a finite [batch, H >= 1, action_dim] array (any env's policy)."""
    actions = np.asarray(actions, dtype=np.float64)
    if (
        actions.ndim != 3
        or actions.shape[0] != batch
        or actions.shape[2] != action_dim
        or actions.shape[1] < 1
    ):
        raise ValueError(
            f"policy.act: expected actions [B={batch}, H, D={action_dim}], got shape {list(actions.shape)}"
        )
    if not np.isfinite(actions).all():
        raise ValueError("policy.act: actions contain NaN or inf")
    return actions


def run_batch(
    policy: Policy,
    env: VectorEnv,
    seeds: list[int],
    options: dict,
    config: EvalConfig,
    record: bool = False,
    watch: Callable[[Any], Any] | None = None,
) -> tuple[list[dict], list[np.ndarray]]:
    """Run one batch of episodes to the end; per-env dicts and, when `record`, env 0's frames.
    `watch(env)`, called for each env after the reset, returns an object whose `update()` runs after
    each of that env's steps, as the follow tracker's does (probes of what happens in an episode)."""
    if hasattr(policy, "bind"):  # env-aware policies (the oracle) see the envs they act in
        policy.bind(env)
    obs, infos = env.reset(seeds, options)
    trackers = [FollowTracker(e) for e in env.envs]
    watchers = [watch(e) for e in env.envs] if watch is not None else []
    lengths = np.zeros(env.num_envs, dtype=np.int64)
    frames = [obs["image"][0]] if record else []
    while not env.done.all():
        chunk = check_chunk(policy.act(obs), env.num_envs)
        for k in range(min(config.execute_steps, chunk.shape[1])):
            active = ~env.done
            obs, _, _, _, _ = env.step(chunk[:, k])
            lengths += active
            for i in np.flatnonzero(active):
                trackers[i].update()
                if watchers:
                    watchers[i].update()
            if record and active[0]:
                frames.append(obs["image"][0])
            if env.done.all():
                break
    results = [
        {
            "instruction": info["task"].instruction,
            "success": bool(env.success[i]),
            "followed": trackers[i].followed(),
            "engaged": trackers[i].engaged,
            "length": int(lengths[i]),
        }
        for i, info in enumerate(infos)
    ]
    return results, frames


def evaluate(
    policy: Policy, config: EvalConfig | None = None, out_dir: str | Path | None = None
) -> EvalResult:
    """Closed-loop success, follow rate and length per split and family; GIFs under out_dir/videos."""
    config = config or EvalConfig()
    world = WorldConfig(image_size=config.image_size, max_steps=config.max_steps,
                        privileged_state=config.privileged_state)  # fmt: skip
    result = EvalResult(config=asdict(config))
    per_family = np.full(len(config.families), config.episodes // len(config.families))
    per_family[: config.episodes % len(config.families)] += 1
    for split in config.splits:
        saved = 0
        for family, count in zip(config.families, per_family, strict=True):
            for start in range(0, int(count), config.num_envs):
                n = min(config.num_envs, int(count) - start)
                seeds = [episode_seed(config.seed, split, family, start + i) for i in range(n)]
                record = out_dir is not None and start == 0 and saved < config.videos
                rows, frames = run_batch(
                    policy, VectorEnv(world, n), seeds, {"split": split, "family": family}, config, record
                )
                for seed, row in zip(seeds, rows, strict=True):
                    result.episodes.append(EpisodeResult(split=split, family=family, seed=seed, **row))
                if record:
                    name = f"{split}_{family}_{'success' if rows[0]['success'] else 'fail'}.gif"
                    result.videos.append(str(save_gif(frames, Path(out_dir) / "videos" / name)))
                    saved += 1
    if out_dir is not None:
        result.save(out_dir)
    return result


def save_gif(frames: list[np.ndarray], path: str | Path, scale: int = 4, fps: int = 10) -> Path:
    """uint8 [S,S,3] frames -> an animated GIF (nearest-neighbour upscaled), written atomically."""
    from PIL import Image

    if not frames:
        raise ValueError("frames: expected at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [
        Image.fromarray(np.asarray(f, dtype=np.uint8)).resize(
            (f.shape[1] * scale, f.shape[0] * scale), Image.Resampling.NEAREST
        )
        for f in frames
    ]
    with atomic_file(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0
        )
    return path
