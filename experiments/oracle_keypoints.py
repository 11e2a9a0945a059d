"""Closed loop with true keypoints (docs/learning.md, fourteenth round): a keypoint policy evaluated
as `kivla eval` does (same seeds), except that its supervised keypoints 0 / 1 are replaced, before
every chunk, by where the objects really are in the env: keypoint 0 on the target, keypoint 1 on
the place-on destination (`--slot1 destination`, the naming_keypoints perception's supervision) or
on the task's goal point (`--slot1 goal`: the destination, the named corner's centre, the end of a
push, the target for a reach; the goal_keypoints perception's). An expert with a goal point
(ExpertConfig.goal_point) gets the task's goal point there as well. It bounds what better keypoints
could give the same expert. `--slots` replaces only some of the points (0: keypoint 0, 1: keypoint
1, 2: the goal), to say which one's error costs the most episodes (eighteenth round); every run
also prints how far the policy's own points lie from the true ones, per family (median, in the
world's units: the table is 1 wide).

    python experiments/oracle_keypoints.py runs/demo/ki/checkpoints/step_00000900
    python experiments/oracle_keypoints.py runs/demo/ki/checkpoints/step_00002000 --slots 0
    python experiments/oracle_keypoints.py runs/demo/ki/checkpoints/step_00002000 --slots   # none
    python experiments/oracle_keypoints.py runs/exp/policy/fz_goal_900/checkpoints/step_00000900 --slot1 goal

Prints the summary and appends one JSON line to runs/exp/oracle_keypoints.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from kivla.data.world_tasks import goal_point
from kivla.eval.baselines import BundlePolicy
from kivla.eval.rollout import EvalConfig, evaluate
from kivla.model.bundle import PolicyBundle


def true_keypoints(envs, slot1: str, with_goal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(use bool [B, F], points [B, F, 2] in [-1, 1]) of the envs' target, slot-1 point and, with
    `with_goal` (an expert with a goal point, third: ExpertConfig.goal_point), the goal point."""
    use = torch.zeros(len(envs), 3 if with_goal else 2, dtype=torch.bool)
    points = torch.zeros(len(envs), use.shape[1], 2)
    for i, env in enumerate(envs):
        task, scene = env.task, env.scene
        goal = torch.from_numpy(np.asarray(goal_point(task, scene)) * 2 - 1)
        use[i, 0] = True
        points[i, 0] = torch.from_numpy(scene.positions[task.target] * 2 - 1)
        if slot1 == "goal":
            use[i, 1], points[i, 1] = True, goal
        elif task.destination >= 0:
            use[i, 1] = True
            points[i, 1] = torch.from_numpy(scene.positions[task.destination] * 2 - 1)
        if with_goal:
            use[i, 2], points[i, 2] = True, goal
    return use, points


class TrueKeypointPolicy(BundlePolicy):
    """A bundle whose expert gets the envs' true keypoints 0 / 1 (and goal) in `slots` (`bind`
    gives it the envs); `errors[(family, slot)]` collects how far its own points lie from them."""

    def __init__(self, bundle, slot1: str, seed: int = 0, slots: tuple[int, ...] = (0, 1, 2)) -> None:
        super().__init__(bundle, seed=seed)
        if bundle.policy.expert.keypoints is None:
            raise ValueError("policy: has no keypoints to replace (ExpertConfig.keypoints is 0)")
        self.slot1, self.envs, self.slots = slot1, None, slots
        self.errors: dict[tuple[str, int], list[float]] = {}

    def bind(self, env) -> None:
        self.envs = env.envs

    def act(self, obs):
        expert = self.bundle.policy.expert
        use, points = true_keypoints(self.envs, self.slot1, expert.goal is not None)
        families = [env.task.family for env in self.envs]
        original = expert.context

        def context(cache, num_actions, dtype, forced=None):
            own = expert.points(cache)[:, : use.shape[1]].float()  # [B, F, 2] in [-1, 1]
            error = (own - points).norm(dim=-1) / 2  # in the world's units
            for i, k in use.nonzero().tolist():
                self.errors.setdefault((families[i], k), []).append(float(error[i, k]))
            keep = torch.zeros_like(use)
            keep[:, [k for k in self.slots if k < use.shape[1]]] = True
            return original(cache, num_actions, dtype, (use & keep, points))

        expert.context = context
        try:
            return super().act(obs)
        finally:
            del expert.context  # back to the class's method


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--slot1", choices=("destination", "goal"), default="destination")
    p.add_argument("--episodes", type=int, default=48, help="per split")
    p.add_argument("--out", default="runs/exp/oracle_keypoints")
    p.add_argument(
        "--slots", type=int, nargs="*", default=[0, 1, 2],
        help="points to replace: 0 keypoint 0, 1 keypoint 1, 2 the goal (none: its own)",
    )  # fmt: skip
    args = p.parse_args()
    bundle = PolicyBundle.load(args.checkpoint)
    config = EvalConfig(episodes=args.episodes, image_size=bundle.builder.image_size, seed=0)
    name = Path(args.checkpoint).parent.parent.name
    policy = TrueKeypointPolicy(bundle, args.slot1, slots=tuple(args.slots))
    summary = evaluate(policy, config, Path(args.out) / name).summary()
    errors = {
        f"{family}/{k}": round(float(np.median(v)), 4) for (family, k), v in sorted(policy.errors.items())
    }
    record = {"checkpoint": args.checkpoint, "slot1": args.slot1, "slots": args.slots, "closed_loop": summary,
              "own_point_error_median": errors}  # fmt: skip
    for split in config.splits:
        s = summary[split]
        families = {f: round(v["success_rate"], 3) for f, v in s["families"].items()}
        print(f"{split}: success {s['success_rate']:.1%} follow {s['follow_rate']:.1%} {families}")
    print("own points' median error (family/slot):", errors)
    with open("runs/exp/oracle_keypoints.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
