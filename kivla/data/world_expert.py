"""The scripted expert: minimum-jerk segments between waypoints, varied per episode.

`plan_actions(scene, task, style)` plans the remaining actions from any scene (so the expert can
take over mid-episode); `expert_action(env)` / `expert_chunk(env, horizon)` are the oracle hooks an
evaluation wraps as a policy. The plan made at reset is kept while the env follows it exactly
(the expert drove it), and re-planned from the current scene as soon as the env left it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kivla.data.world_env import MAX_XY_STEP, MAX_Z_STEP, PUSH_CONTACT, TabletopEnv
from kivla.data.world_scene import Scene, object_labels
from kivla.data.world_tasks import DIRECTIONS, REGIONS, Task

GRIP_STEPS = 3
# Average speeds per step; a minimum-jerk segment peaks at 1.875x its average speed, which
# stays under the env's step limits, so the end effector follows the plan exactly.
MAX_XY_SPEED = MAX_XY_STEP / 2.0
Z_SPEED = MAX_Z_STEP / 3.0


def min_jerk(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """[steps, D] points of the minimum-jerk curve from start (excluded) to end (included)."""
    tau = np.arange(1, steps + 1, dtype=np.float64) / steps
    s = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    return start[None] + s[:, None] * (end - start)[None]


@dataclass(frozen=True)
class ExpertStyle:
    """Per-episode variation of the expert."""

    speed: float  # average planar speed per step
    z_up: float  # travel height
    z_down: float  # grasp / push height
    z_place: float  # release height
    grasp_offset: tuple[float, float]  # where on the object the gripper aims
    place_offset: tuple[float, float]  # where around the goal the object is put
    push_distance: float  # how far a push moves the object
    push_speed: float  # fraction of `speed` while pushing

    @classmethod
    def sample(cls, rng: np.random.Generator) -> ExpertStyle:
        def disc(radius: float) -> tuple[float, float]:
            angle, r = rng.uniform(0, 2 * np.pi), radius * np.sqrt(rng.uniform())
            return (float(r * np.cos(angle)), float(r * np.sin(angle)))

        return cls(
            speed=float(rng.uniform(0.4, 0.7) * MAX_XY_SPEED),
            z_up=float(rng.uniform(0.7, 1.0)),
            z_down=float(rng.uniform(0.04, 0.12)),
            z_place=float(rng.uniform(0.12, 0.25)),
            grasp_offset=disc(0.015),
            place_offset=disc(0.012),
            push_distance=float(rng.uniform(0.19, 0.23)),
            push_speed=float(rng.uniform(0.5, 0.8)),
        )


class _Plan:
    """Appends minimum-jerk segments from the current command."""

    def __init__(self, ee: np.ndarray, style: ExpertStyle):
        self.cur = np.asarray(ee, dtype=np.float64).copy()
        self.style = style
        self.segments: list[np.ndarray] = []

    def to(self, x=None, y=None, z=None, g=None, speed: float | None = None) -> None:
        end = self.cur.copy()
        for i, v in enumerate((x, y, z, g)):
            if v is not None:
                end[i] = v
        xy = float(np.hypot(*(end[:2] - self.cur[:2])))
        dz = abs(end[2] - self.cur[2])
        steps = max(xy / (speed or self.style.speed), dz / Z_SPEED)
        steps = max(int(np.ceil(steps)), GRIP_STEPS if end[3] != self.cur[3] else 0, 1)
        if np.array_equal(end, self.cur):
            return
        self.segments.append(min_jerk(self.cur, end, steps))
        self.cur = end

    def actions(self) -> np.ndarray:
        """float32 [T, 4]; at least one step (holding still)."""
        if not self.segments:
            return self.cur[None].astype(np.float32)
        return np.concatenate(self.segments).astype(np.float32)


def plan_actions(scene: Scene, task: Task, style: ExpertStyle) -> np.ndarray:
    """float32 [T, 4]: the expert's remaining actions from `scene` (re-planning is stateless)."""
    p = _Plan(scene.ee, style)
    s = style
    target = scene.positions[task.target]
    if task.family in ("place_on", "place_in"):
        if scene.held >= 0 and scene.held != task.target:
            p.to(g=1.0)  # drop the wrong object first
        offset = scene.hold_offset if scene.held == task.target else None
        if scene.held != task.target:
            gx, gy = target + np.asarray(s.grasp_offset)
            p.to(z=s.z_up)
            p.to(x=gx, y=gy, g=1.0)
            p.to(z=s.z_down)
            p.to(g=0.0)
            offset = target - np.array([gx, gy])
        goal = (
            scene.positions[task.destination] if task.family == "place_on" else np.array(REGIONS[task.region])
        )
        ex, ey = goal + np.asarray(s.place_offset) - offset
        p.to(z=s.z_up)
        p.to(x=ex, y=ey)
        p.to(z=s.z_place)
        p.to(g=1.0)
        p.to(z=s.z_up)
    elif task.family == "push":
        direction = np.asarray(DIRECTIONS[task.direction])
        done = float((target - np.asarray(task.start)) @ direction)
        remaining = s.push_distance - done
        if remaining > 0.01:
            pre = target - direction * (PUSH_CONTACT + 0.03)
            end = target + direction * (remaining - PUSH_CONTACT)
            if scene.ee[2] < s.z_up - 0.05 and np.hypot(*(scene.ee[:2] - pre)) > 0.02:
                p.to(z=s.z_up)
            p.to(x=pre[0], y=pre[1], g=0.0)
            p.to(z=s.z_down)
            p.to(x=end[0], y=end[1], speed=s.speed * s.push_speed)
        p.to(z=s.z_up)
    elif task.family == "reach":
        gx, gy = target + np.asarray(s.grasp_offset)
        if scene.ee[2] < s.z_up - 0.05 and np.hypot(*(scene.ee[:2] - (gx, gy))) > 0.05:
            p.to(z=s.z_up)
        p.to(x=gx, y=gy, g=1.0)
        p.to(z=min(s.z_place, 0.3))
    else:
        raise ValueError(f"task.family: unknown {task.family!r}")
    return p.actions()


def expert_style(env: TabletopEnv) -> ExpertStyle:
    """The episode's style, drawn from the reset seed (independent of the scene's draws)."""
    return ExpertStyle.sample(np.random.default_rng([env.seed, 1]))


def expert_chunk(env: TabletopEnv, horizon: int) -> np.ndarray:
    """float32 [horizon, 4]: the expert's next `horizon` actions (the last one repeated at the end)."""
    if env.scene is None:
        raise ValueError("expert_chunk: call env.reset() first")
    if horizon < 1:
        raise ValueError(f"horizon: expected >= 1, got {horizon}")
    cache = env.expert_cache
    plan, k = cache.get("plan"), env.t - cache.get("t0", 0)
    # ee[k]: the exact end-effector state expected after k planned steps; past the plan, re-plan.
    followed = plan is not None and 0 <= k < len(cache["ee"]) and np.array_equal(env.scene.ee, cache["ee"][k])
    if not followed:
        style = cache.setdefault("style", expert_style(env))
        plan = plan_actions(env.scene, env.task, style)
        cache.update(plan=plan, t0=env.t, ee=np.concatenate([env.scene.ee[None], plan.astype(np.float64)]))
        k = 0
    idx = np.minimum(np.arange(k, k + horizon), len(plan) - 1)
    return plan[idx]


def expert_action(env: TabletopEnv) -> np.ndarray:
    """float32 [4]: the expert's action for the env's current state."""
    return expert_chunk(env, 1)[0]


def rollout_expert(env: TabletopEnv, seed: int, options: dict | None = None) -> dict:
    """Run one expert episode. Returns images [T,S,S,3], states [T,5], actions [T,4], task, success,
    and the world's annotations of every frame: `labels` uint8 [T,S,S] (`Renderer.label_map`) and
    `refer` int64 [2] (label classes of the instruction's target and destination, 0 = none), and
    `goal` float64 [2], the target's centre (x, y) at the end: where the demonstration took it."""
    obs, info = env.reset(seed, options)
    images, states, actions, labels = [], [], [], []
    success = False
    for _ in range(env.config.max_steps):
        action = expert_action(env)
        images.append(obs["image"])
        states.append(obs["state"])
        labels.append(env.renderer.label_map(env.scene))
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            success = bool(info["success"])
            break
    return {
        "images": np.stack(images),
        "states": np.stack(states),
        "actions": np.stack(actions).astype(np.float32),
        "labels": np.stack(labels),
        "refer": referred_classes(env.task, env.scene),
        "goal": env.scene.positions[env.task.target].copy(),
        "task": info["task"],
        "success": success,
        "seed": seed,
    }


def referred_classes(task: Task, scene: Scene) -> np.ndarray:
    """int64 [2]: the label classes of the objects an instruction names (target, destination; 0 = none)."""
    classes = object_labels(scene)
    destination = classes[task.destination] if task.destination >= 0 else 0
    return np.array([classes[task.target], destination], dtype=np.int64)
