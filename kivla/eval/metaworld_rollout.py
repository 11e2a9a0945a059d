"""Closed-loop evaluation on Meta-World: success per task and per difficulty group, episode length.

The same `Policy` interface as the built-in world (`kivla.eval.rollout`): obs {"image" uint8
[B,S,S,3], "state" float32 [B,4], "instruction" list[str]} -> actions [B, H, 4] in [-1, 1]. For
each task, `num_envs` envs of the task step together; the first `execute_steps` actions of each
chunk run, then the policy replans. An episode ends at its first success (Meta-World's
info["success"]) or at `max_steps`. Episode k of a task starts from configuration k (mod 50) of
benchmark seed `seed`: the default (1) differs from the dataset generator's default (0), so a
policy is scored on object and goal placements it was not trained on.

Policies with `needs_images = False` (the scripted expert, random actions) are stepped without
rendering, except the episodes saved as MP4.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from kivla.data.metaworld_env import (
    ACTION_DIM,
    FPS,
    MAX_PATH_LENGTH,
    MetaWorldConfig,
    MetaWorldEnv,
)
from kivla.data.metaworld_tasks import DIFFICULTY, GROUP_OF, MT10, resolve_tasks
from kivla.eval.rollout import Policy, check_chunk, success_interval
from kivla.io import atomic_file, write_json, write_text

EVAL_SEED = 1  # Meta-World benchmark seed of evaluation episodes (datasets default to 0)


@dataclass(frozen=True)
class MetaWorldEvalConfig:
    tasks: tuple[str, ...] = MT10
    episodes: int = 10  # per task
    num_envs: int = 10  # envs of one task stepped together (one policy call per replan)
    execute_steps: int = 10  # actions executed from each chunk before replanning
    max_steps: int = MAX_PATH_LENGTH
    image_size: int = 128
    camera: str = "corner4"
    seed: int = EVAL_SEED
    videos: int = 3  # MP4 rollouts saved: the first episode of the first `videos` tasks

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", resolve_tasks(self.tasks))
        for name in ("episodes", "num_envs", "execute_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"MetaWorldEvalConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if self.videos < 0:
            raise ValueError(f"MetaWorldEvalConfig.videos: expected >= 0, got {self.videos}")
        self.env_config()  # validates image_size, camera, max_steps, seed

    def env_config(self) -> MetaWorldConfig:
        return MetaWorldConfig(self.image_size, self.camera, self.max_steps, self.seed)


@dataclass
class MetaWorldEpisode:
    task: str
    group: str
    config_index: int  # Meta-World configuration of the task (of benchmark seed config.seed)
    success: bool
    length: int  # env steps until the first success or max_steps


@dataclass
class MetaWorldEvalResult:
    config: dict[str, Any]
    episodes: list[MetaWorldEpisode] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per task

    def summary(self) -> dict[str, Any]:
        """{"tasks": {task: rates}, "groups": {group: rates}, "all": rates}; rates = episodes,
        success_rate, mean_length (all episodes) and mean_success_length (successful ones)."""
        tasks = {t: _rates([e for e in self.episodes if e.task == t]) for t in dict.fromkeys(self.tasks())}
        groups = {
            g: _rates([e for e in self.episodes if e.group == g])
            for g in DIFFICULTY
            if any(e.group == g for e in self.episodes)
        }
        return {"tasks": tasks, "groups": groups, "all": _rates(self.episodes)}

    def tasks(self) -> list[str]:
        return [e.task for e in self.episodes]

    def timing(self) -> dict[str, float]:
        total = sum(self.seconds.values())
        return {"seconds": total, "seconds_per_episode": total / max(len(self.episodes), 1)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "summary": self.summary(),
            "timing": self.timing(),
            "videos": self.videos,
            "episodes": [asdict(e) for e in self.episodes],
        }

    def markdown(self, title: str = "Meta-World closed-loop evaluation") -> str:
        s = self.summary()
        header = "| task | group | episodes | success | mean length | mean length (successes) |"
        lines = [f"## {title}", "", header, "|---|---|---:|---:|---:|---:|"]
        lines += [_row(task, GROUP_OF[task], r) for task, r in s["tasks"].items()]
        lines += [_row(f"**{group}**", "", r) for group, r in s["groups"].items()]
        lines.append(_row("**all**", "", s["all"]))
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | Path) -> Path:
        """`eval.json` and `eval.md` in out_dir (atomic writes)."""
        out_dir = Path(out_dir)
        write_json(out_dir / "eval.json", self.to_dict())
        write_text(out_dir / "eval.md", self.markdown())
        return out_dir / "eval.json"


def _rates(rows: list[MetaWorldEpisode]) -> dict[str, Any]:
    """Rates of `rows` (non-empty); mean_success_length is None (JSON null) without a success."""
    wins = [e.length for e in rows if e.success]
    return {
        "episodes": len(rows),
        "success_rate": float(np.mean([e.success for e in rows])),
        "success_ci95": success_interval(len(wins), len(rows)),
        "mean_length": float(np.mean([e.length for e in rows])),
        "mean_success_length": float(np.mean(wins)) if wins else None,
    }


def _row(name: str, group: str, r: dict[str, Any]) -> str:
    wins = r["mean_success_length"]
    return (
        f"| {name} | {group} | {r['episodes']} | {r['success_rate']:.1%} | {r['mean_length']:.1f} "
        f"| {'–' if wins is None else f'{wins:.1f}'} |"
    )


def run_batch(
    policy: Policy, envs: list[MetaWorldEnv], indices: list[int], config: MetaWorldEvalConfig, record: bool
) -> tuple[list[tuple[bool, int]], list[np.ndarray]]:
    """Run one batch of episodes (env i from configuration indices[i]) to the end.

    Returns (success, length) per env and, when `record`, env 0's frames."""
    needs_images = getattr(policy, "needs_images", True)
    for i, env in enumerate(envs):
        env.render_images = needs_images or (record and i == 0)
    if hasattr(policy, "bind"):  # env-aware policies (the expert) read the envs they act in
        policy.bind(envs)
    observations = [env.reset(index) for env, index in zip(envs, indices, strict=True)]
    frames = [observations[0]["image"]] if record else []
    while not all(env.done for env in envs):
        obs = {
            "state": np.stack([o["state"] for o in observations]),
            "instruction": [o["instruction"] for o in observations],
        }
        if needs_images:
            obs["image"] = np.stack([o["image"] for o in observations])
        chunk = check_chunk(policy.act(obs), len(envs), ACTION_DIM)
        for k in range(min(config.execute_steps, chunk.shape[1])):
            for i, env in enumerate(envs):
                if not env.done:
                    observations[i], _ = env.step(chunk[i, k])
                    if record and i == 0:
                        frames.append(observations[0]["image"])
            if all(env.done for env in envs):
                break
    return [(env.success, env.steps) for env in envs], frames


def evaluate_metaworld(
    policy: Policy,
    config: MetaWorldEvalConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> MetaWorldEvalResult:
    """Closed-loop success per task and difficulty group; MP4 rollouts under out_dir/videos."""
    from tqdm import tqdm

    config = config or MetaWorldEvalConfig()
    result = MetaWorldEvalResult(config=asdict(config))
    bar = tqdm(total=len(config.tasks) * config.episodes, desc="episodes", unit="ep", disable=not progress)
    for t, task in enumerate(config.tasks):
        start = time.perf_counter()
        envs = [MetaWorldEnv(task, config.env_config()) for _ in range(min(config.num_envs, config.episodes))]
        try:
            for first in range(0, config.episodes, len(envs)):
                indices = list(range(first, min(first + len(envs), config.episodes)))
                record = out_dir is not None and first == 0 and t < config.videos
                rows, frames = run_batch(policy, envs[: len(indices)], indices, config, record)
                for index, (success, length) in zip(indices, rows, strict=True):
                    result.episodes.append(MetaWorldEpisode(task, GROUP_OF[task], index, success, length))
                if record:
                    name = f"{task}_{'success' if rows[0][0] else 'fail'}.mp4"
                    result.videos.append(str(save_mp4(frames, Path(out_dir) / "videos" / name)))
                bar.update(len(indices))
        finally:
            for env in envs:
                env.close()
        result.seconds[task] = time.perf_counter() - start
    bar.close()
    if out_dir is not None:
        result.save(out_dir)
    return result


def save_mp4(frames: list[np.ndarray], path: str | Path, fps: int = FPS) -> Path:
    """uint8 [S,S,3] frames (even sides) -> an H.264 MP4 at the control rate, written atomically."""
    import av

    if not frames:
        raise ValueError("frames: expected at least one frame")
    path = Path(path)
    with atomic_file(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return path
