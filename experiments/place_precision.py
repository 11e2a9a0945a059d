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
from kivla.eval.rollout import EvalConfig, check_chunk, episode_seed
from kivla.model.bundle import PolicyBundle


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _share(hits: list[bool]) -> float | None:
    return float(np.mean(hits)) if hits else None


def pick_place_episodes(policy, family: str, split: str, episodes: int, execute_steps: int = 10) -> dict:
    """Grasp and release outcomes of `episodes` episodes of `family` in `split` (the eval's seeds)."""
    config = EvalConfig(episodes=episodes, families=(family,), execute_steps=execute_steps)
    seeds = [episode_seed(config.seed, split, family, i) for i in range(episodes)]
    env = VectorEnv(WorldConfig(image_size=config.image_size, max_steps=config.max_steps), episodes)
    if hasattr(policy, "bind"):
        policy.bind(env)
    obs, _ = env.reset(seeds, {"split": split, "family": family})
    picked = np.zeros(episodes, dtype=bool)
    picked_other = np.zeros(episodes, dtype=bool)  # held another object before the target
    first_close: list[float | None] = [None] * episodes  # ee-target distance at the first empty close
    nearer_dest: list[bool] = []  # place_on: that close was nearer the destination than the target
    towards_dest: list[float] = []  # place_on: its offset from the target along target -> destination
    first_release: list[float | None] = [None] * episodes  # target-goal distance when first let go
    was_open = np.ones(episodes, dtype=bool)
    held_before = np.full(episodes, -1)
    while not env.done.all():
        chunk = check_chunk(policy.act(obs), episodes)
        for k in range(min(config.execute_steps, chunk.shape[1])):
            active = ~env.done
            before = [e.scene.positions.copy() for e in env.envs]  # a failed close pushes objects
            obs, *_ = env.step(chunk[:, k])
            for i in np.flatnonzero(active):
                task, scene = env.envs[i].task, env.envs[i].scene
                ee = scene.ee
                if was_open[i] and ee[3] < 0.5 and ee[2] < GRASP_HEIGHT and held_before[i] < 0:
                    if first_close[i] is None:
                        first_close[i] = float(np.linalg.norm(before[i][task.target] - ee[:2]))
                        if task.destination >= 0:
                            to_dest = float(np.linalg.norm(before[i][task.destination] - ee[:2]))
                            nearer_dest.append(to_dest < first_close[i])
                            axis = before[i][task.destination] - before[i][task.target]
                            offset = ee[:2] - before[i][task.target]
                            towards_dest.append(float(offset @ axis / np.linalg.norm(axis)))
                if scene.held >= 0 and not picked[i] and scene.held != task.target:
                    picked_other[i] = True
                picked[i] |= scene.held == task.target
                if held_before[i] == task.target and scene.held != task.target and first_release[i] is None:
                    gap = scene.positions[task.target] - goal_point(task, scene)
                    first_release[i] = float(np.linalg.norm(gap))
                was_open[i] = ee[3] >= 0.5
                held_before[i] = scene.held
            if env.done.all():
                break
    final = [np.linalg.norm(e.scene.positions[e.task.target] - goal_point(e.task, e.scene)) for e in env.envs]
    closes = [d for d in first_close if d is not None]
    releases = [d for d in first_release if d is not None]
    return {
        "family": family,
        "split": split,
        "episodes": episodes,
        "success": float(env.success.mean()),
        "closed_low": float(np.mean([d is not None for d in first_close])),
        "first_close_target_distance_median": _median(closes),
        "first_close_within_grasp_radius": _share([d <= GRASP_RADIUS for d in closes]),
        "first_close_nearer_the_destination": _share(nearer_dest),
        "first_close_offset_towards_destination_median": _median(towards_dest),
        "picked_up_target": float(picked.mean()),
        "picked_up_another_object_first": float(picked_other.mean()),
        "released_target": float(np.mean([d is not None for d in first_release])),
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
