"""The privileged-state bound without the goal (docs/learning.md, fourteenth round): the world's
goal point is replaced by the target's own position, so that the privileged state tells the policy
where the target is and nothing about where it must go. Runs a kivla command, or
experiments/policy_losses.py, in this process with that change (data generation and evaluation
must both see it):

    python experiments/privileged_no_goal.py kivla world generate --episodes 300 --seed 0 \
        --privileged-state --out runs/exp/data_nogoal
    python experiments/privileged_no_goal.py kivla world generate --episodes 30 --seed 1 \
        --privileged-state --out runs/exp/val_nogoal
    python experiments/privileged_no_goal.py policy_losses nogoal_fz_900 --recipe frozen \
        --data runs/exp/data_nogoal --val runs/exp/val_nogoal \
        --init runs/demo/pretrain/checkpoints/step_00000600 --steps 900 --lr 1e-3 \
        --policy '{"state_input": "token"}'
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import kivla.data.world_env as world_env


def target_as_goal(task, scene):
    return scene.positions[task.target].copy()


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("kivla", "policy_losses"):
        raise SystemExit("usage: privileged_no_goal.py (kivla ARGS... | policy_losses ARGS...)")
    world_env.goal_point = target_as_goal  # what the env appends to the privileged state
    command, args = sys.argv[1], sys.argv[2:]
    if command == "kivla":
        from kivla.cli import main as kivla_main

        return kivla_main(args)
    script = Path(__file__).with_name("policy_losses.py")
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
