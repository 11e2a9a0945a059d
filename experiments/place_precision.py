"""Why place-on fails (docs/learning.md, ninth round): the evaluation's pick-and-place episodes (same
seeds as `kivla eval`), with what happened to the target in each: where the gripper was when it
first closed low with nothing in it (a grasp needs the target within GRASP_RADIUS), whether the
target was picked up, where it was let go relative to the goal point (the destination's centre, or
the region's), and how far from it it ended.

    python experiments/place_precision.py runs/long/ki_4800/checkpoints/step_00004800 --oracle \
        --keypoint-peak -1
    python experiments/place_precision.py runs/long/ki_4800/checkpoints/step_00004800 --keypoint-peak 1

Prints one JSON object per policy, family and split (the checkpoint; with --oracle the scripted
expert too).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kivla.data.world_env import GRASP_HEIGHT, GRASP_RADIUS, VectorEnv, WorldConfig
from kivla.data.world_tasks import PLACE_ON_TOLERANCE, goal_point
from kivla.eval.baselines import BundlePolicy, OraclePolicy
from kivla.eval.rollout import EvalConfig, episode_seed, run_batch
from kivla.model.bundle import PolicyBundle


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _share(hits: list[bool]) -> float | None:
    return float(np.mean(hits)) if hits else None


def _present(watchers: list, name: str) -> list:
    """The watchers' values of `name` where the episode had one (not None)."""
    return [v for v in (getattr(w, name) for w in watchers) if v is not None]


class GraspWatcher:
    """One env's episode as `run_batch` steps it: the first empty close low, the pick-ups and the
    first release of the target."""

    def __init__(self, env) -> None:
        self.env = env
        self.before = env.scene.positions.copy()  # positions before the step (a failed close pushes)
        self.was_open, self.held_before = True, -1
        self.first_close: float | None = None  # ee-target distance at the first empty close
        self.nearer_dest: bool | None = None  # place_on: that close was nearer the destination
        self.towards_dest: float | None = None  # place_on: its offset along target -> destination
        self.picked = self.picked_other = False  # the target / another object first
        self.first_release: float | None = None  # target-goal distance when first let go

    def update(self) -> None:
        task, scene, before = self.env.task, self.env.scene, self.before
        ee = scene.ee
        closed_low_empty = self.was_open and ee[3] < 0.5 and ee[2] < GRASP_HEIGHT and self.held_before < 0
        if closed_low_empty and self.first_close is None:
            self.first_close = float(np.linalg.norm(before[task.target] - ee[:2]))
            if task.destination >= 0:
                self.nearer_dest = float(np.linalg.norm(before[task.destination] - ee[:2])) < self.first_close
                axis = before[task.destination] - before[task.target]
                self.towards_dest = float((ee[:2] - before[task.target]) @ axis / np.linalg.norm(axis))
        if scene.held >= 0 and not self.picked and scene.held != task.target:
            self.picked_other = True
        self.picked |= scene.held == task.target
        if self.held_before == task.target and scene.held != task.target and self.first_release is None:
            self.first_release = float(np.linalg.norm(scene.positions[task.target] - goal_point(task, scene)))
        self.was_open, self.held_before = ee[3] >= 0.5, scene.held
        self.before = scene.positions.copy()


def pick_place_episodes(policy, family: str, split: str, episodes: int, execute_steps: int = 10) -> dict:
    """Grasp and release outcomes of `episodes` episodes of `family` in `split` (the eval's seeds),
    all stepped together by the evaluation's own loop."""
    config = EvalConfig(episodes=episodes, families=(family,), execute_steps=execute_steps)
    seeds = [episode_seed(config.seed, split, family, i) for i in range(episodes)]
    env = VectorEnv(WorldConfig(image_size=config.image_size, max_steps=config.max_steps), episodes)
    watchers: list[GraspWatcher] = []

    def watch(e) -> GraspWatcher:
        watchers.append(GraspWatcher(e))
        return watchers[-1]

    rows, _ = run_batch(policy, env, seeds, {"split": split, "family": family}, config, watch=watch)
    final = [np.linalg.norm(e.scene.positions[e.task.target] - goal_point(e.task, e.scene)) for e in env.envs]
    closes, releases = _present(watchers, "first_close"), _present(watchers, "first_release")
    return {
        "family": family,
        "split": split,
        "episodes": episodes,
        "success": float(np.mean([r["success"] for r in rows])),
        "closed_low": float(np.mean([w.first_close is not None for w in watchers])),
        "first_close_target_distance_median": _median(closes),
        "first_close_within_grasp_radius": _share([d <= GRASP_RADIUS for d in closes]),
        "first_close_nearer_the_destination": _share(_present(watchers, "nearer_dest")),
        "first_close_offset_towards_destination_median": _median(_present(watchers, "towards_dest")),
        "picked_up_target": float(np.mean([w.picked for w in watchers])),
        "picked_up_another_object_first": float(np.mean([w.picked_other for w in watchers])),
        "released_target": float(np.mean([w.first_release is not None for w in watchers])),
        "first_release_goal_distance_median": _median(releases),
        "first_release_within_place_on_tolerance": _share([d < PLACE_ON_TOLERANCE for d in releases]),
        "final_goal_distance_median": float(np.median(final)),
        "grasp_radius": GRASP_RADIUS,
        "place_on_tolerance": PLACE_ON_TOLERANCE,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--families", nargs="+", default=["place_on", "place_in"])
    p.add_argument("--episodes", type=int, default=12, help="episodes a family and split (eval: 48 / 4)")
    p.add_argument("--execute-steps", type=int, default=10)
    p.add_argument("--keypoint-peak", type=int, help="as `kivla eval --keypoint-peak`")
    p.add_argument("--oracle", action="store_true", help="also the scripted expert on the same seeds")
    args = p.parse_args()
    bundle = PolicyBundle.load(args.checkpoint)
    if args.keypoint_peak is not None:
        bundle.set_keypoint_peak(args.keypoint_peak)
    policies = {str(args.checkpoint): BundlePolicy(bundle, seed=0)}
    if args.oracle:
        policies["oracle"] = OraclePolicy()
    for name, policy in policies.items():
        for family in args.families:
            for split in ("train", "ood"):
                row = pick_place_episodes(policy, family, split, args.episodes, args.execute_steps)
                peak = args.keypoint_peak if name != "oracle" else None
                print(json.dumps({"policy": name, "keypoint_peak": peak, **row}))


if __name__ == "__main__":
    main()
