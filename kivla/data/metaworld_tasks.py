"""Meta-World's tasks as kivla sees them: names, one instruction each, difficulty groups, suites.

Pure data (no MuJoCo import), so that argument checking and `--help` stay cheap. Meta-World ships
no language; the instructions below are kivla's, one per task, written from each task's success
condition in the Meta-World 3.1.1 sources (the lever's goal is above its start: it is pulled up).
Faucet: the handle starts pointing at the robot; open swings it to the robot's right (+x), a
counter-clockwise turn about the vertical axis seen from above (the hinge angle grows), close
swings it to the left (clockwise); `metaworld_env_test.py` pins the sign on the expert's rollouts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kivla.presets import Presets, unknown_name

# task name -> instruction, in Meta-World's MT50 order.
INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and put it onto the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the puck from one bin into the other bin",
    "box-close-v3": "pick up the lid and close the box with it",
    "button-press-topdown-v3": "press the button down from the top",
    "button-press-topdown-wall-v3": "reach over the wall and press the button down from the top",
    "button-press-v3": "press the button in from the front",
    "button-press-wall-v3": "go around the wall and press the button in from the front",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "pull the nut up off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock down",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock back",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open",
    "faucet-close-v3": "turn the faucet handle clockwise to close it",
    "faucet-open-v3": "turn the faucet handle counter-clockwise to open it",
    "hammer-v3": "hammer the nail into the wall",
    "hand-insert-v3": "put the gripper into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "pull the peg out of the hole sideways",
    "pick-out-of-hole-v3": "pick the puck up out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck, lift it over the wall and place it at the goal",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "plate-slide-back-v3": "slide the plate back out of the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-v3": "slide the plate into the cabinet",
    "push-back-v3": "push the puck back to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "reach-v3": "reach the goal with the gripper",
    "reach-wall-v3": "reach over the wall to the goal",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "soccer-v3": "push the ball into the goal",
    "stick-pull-v3": "grab the stick and pull the box with it",
    "stick-push-v3": "grab the stick and push the box with it",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "slide the window closed",
    "window-open-v3": "slide the window open",
}
TASKS: tuple[str, ...] = tuple(INSTRUCTIONS)

# Difficulty groups as LeRobot reports Meta-World results by (huggingface/lerobot,
# src/lerobot/envs/metaworld_config.json, "DIFFICULTY_TO_TASKS": 28 easy, 11 medium, 6 hard, 5 very hard).
DIFFICULTY: dict[str, tuple[str, ...]] = {
    "easy": (
        "button-press-v3", "button-press-topdown-v3", "button-press-topdown-wall-v3",
        "button-press-wall-v3", "coffee-button-v3", "dial-turn-v3", "door-close-v3", "door-lock-v3",
        "door-open-v3", "door-unlock-v3", "drawer-close-v3", "drawer-open-v3", "faucet-close-v3",
        "faucet-open-v3", "handle-press-v3", "handle-press-side-v3", "handle-pull-v3",
        "handle-pull-side-v3", "lever-pull-v3", "plate-slide-v3", "plate-slide-back-v3",
        "plate-slide-back-side-v3", "plate-slide-side-v3", "reach-v3", "reach-wall-v3",
        "window-close-v3", "window-open-v3", "peg-unplug-side-v3",
    ),
    "medium": (
        "basketball-v3", "bin-picking-v3", "box-close-v3", "coffee-pull-v3", "coffee-push-v3",
        "hammer-v3", "peg-insert-side-v3", "push-wall-v3", "soccer-v3", "sweep-v3", "sweep-into-v3",
    ),
    "hard": (
        "assembly-v3", "hand-insert-v3", "pick-out-of-hole-v3", "pick-place-v3", "push-v3", "push-back-v3",
    ),
    "very_hard": (
        "shelf-place-v3", "disassemble-v3", "stick-pull-v3", "stick-push-v3", "pick-place-wall-v3",
    ),
}  # fmt: skip
GROUP_OF: dict[str, str] = {task: group for group, tasks in DIFFICULTY.items() for task in tasks}

MT10: tuple[str, ...] = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)  # fmt: skip  (Meta-World's MT10, in its order)


@dataclass(frozen=True)
class TaskSuite:
    """A named list of Meta-World tasks (`--tasks mt10`)."""

    name: str
    tasks: tuple[str, ...]
    note: str = ""

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in INSTRUCTIONS]
        if not self.tasks or bad:
            raise ValueError(f"TaskSuite.tasks: expected known Meta-World tasks, got unknown {bad}")


SUITES: Presets[TaskSuite] = Presets(
    "task suite",
    [
        TaskSuite("mt10", MT10, "Meta-World's MT10"),
        TaskSuite("mt50", TASKS, "all 50 tasks"),
        *(TaskSuite(group, tasks, f"LeRobot's {group} group") for group, tasks in DIFFICULTY.items()),
    ],
)


def resolve_tasks(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Task names from suite names and task names, comma-separated or as a list, in order, once each.

    `-v3` may be left off (`reach` is `reach-v3`); an unknown name raises ValueError naming the field,
    the nearest name and the known ones."""
    items = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in str(s).split(",")]
    out: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item in SUITES:
            out += SUITES[item].tasks
            continue
        name = item if item.endswith("-v3") else f"{item}-v3"
        if name not in INSTRUCTIONS:
            message = unknown_name("Meta-World task", item, (*SUITES.names(), *TASKS))
            raise ValueError(f"tasks: {message}")
        out.append(name)
    if not out:
        raise ValueError(
            f"tasks: expected at least one task or suite ({', '.join(SUITES.names())}), got {spec!r}"
        )
    return tuple(dict.fromkeys(out))
