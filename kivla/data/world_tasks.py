"""Task grammar, success predicates and the train / OOD split of compositions.

Four families: `place_on` (put an object on another), `place_in` (put an object in a corner
region), `push` (push an object in a direction) and `reach` (bring the gripper to an object).
A composition is the triple (target color, target shape, family). A fixed sixth of the triples is
held out: they never appear in the "train" split and are the only ones in the "ood" split, while
every color, shape and family on its own is seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kivla.data.world_scene import COLOR_NAMES, OBJECT_RADIUS, REGION_SIZE, SHAPES, Scene

FAMILIES: tuple[str, ...] = ("place_on", "place_in", "push", "reach")
SPLITS: tuple[str, ...] = ("train", "ood")

REGIONS: dict[str, tuple[float, float]] = {
    "top left corner": (REGION_SIZE / 2, REGION_SIZE / 2),
    "top right corner": (1 - REGION_SIZE / 2, REGION_SIZE / 2),
    "bottom left corner": (REGION_SIZE / 2, 1 - REGION_SIZE / 2),
    "bottom right corner": (1 - REGION_SIZE / 2, 1 - REGION_SIZE / 2),
}
# Directions in image coordinates: "up" is towards the top of the image (smaller y).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
TEMPLATES: dict[str, tuple[str, ...]] = {
    "place_on": ("put the {target} on the {dest}", "place the {target} on top of the {dest}"),
    "place_in": ("put the {target} in the {region}", "move the {target} to the {region}"),
    "push": ("push the {target} {direction}", "slide the {target} {direction}"),
    "reach": ("reach the {target}", "move the gripper to the {target}"),
}

PUSH_SUCCESS_DISTANCE = 0.15  # displacement along the direction that counts as pushed
PUSH_ROOM = 0.27  # the target must have this much table left in the push direction
PLACE_ON_TOLERANCE = 0.6 * OBJECT_RADIUS
REACH_TOLERANCE = 0.05
REACH_MAX_HEIGHT = 0.4


def is_held_out(color: int, shape: int, family: int) -> bool:
    """True for the compositions of the OOD split (3 of 18 color×shape pairs per family)."""
    return (color + shape + family) % len(COLOR_NAMES) == 0


def compositions(split: str) -> list[tuple[int, int, int]]:
    """All (color, shape, family) index triples of a split."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    want_ood = split == "ood"
    return [
        (c, s, f)
        for f in range(len(FAMILIES))
        for c in range(len(COLOR_NAMES))
        for s in range(len(SHAPES))
        if is_held_out(c, s, f) == want_ood
    ]


@dataclass(frozen=True)
class Task:
    """One instruction with everything its success predicate needs."""

    family: str
    instruction: str
    target: int  # object id in the scene
    destination: int = -1  # place_on: object id to put the target on
    region: str = ""  # place_in
    direction: str = ""  # push
    start: tuple[float, float] = (0.0, 0.0)  # target position at reset (push measures from it)
    composition: tuple[str, str, str] = ("", "", "")  # (color, shape, family) names of the target


def sample_task(
    rng: np.random.Generator,
    split: str = "train",
    families: tuple[str, ...] = FAMILIES,
    num_objects: int = 3,
) -> tuple[Task, Scene]:
    """Draw a composition of `split`, a scene that contains its target, and the task text."""
    from kivla.data.world_scene import sample_scene

    for name in families:
        if name not in FAMILIES:
            raise ValueError(f"families: unknown family {name!r}; expected some of {FAMILIES}")
    allowed = [t for t in compositions(split) if FAMILIES[t[2]] in families]
    color, shape, family_index = allowed[rng.integers(len(allowed))]
    family = FAMILIES[family_index]
    if family == "place_on":
        num_objects = max(num_objects, 2)
    scene = sample_scene(rng, num_objects, first=(color, shape))
    target = 0
    fields: dict[str, object] = {}
    words = {"target": scene.name(target)}
    if family == "place_on":
        fields["destination"] = int(rng.integers(1, scene.num_objects))
        words["dest"] = scene.name(fields["destination"])
    elif family == "place_in":
        fields["region"] = words["region"] = list(REGIONS)[rng.integers(len(REGIONS))]
    elif family == "push":
        x, y = scene.positions[target]
        room = [d for d, (dx, dy) in DIRECTIONS.items() if 0.04 <= x + PUSH_ROOM * dx <= 0.96]
        room = [d for d in room if 0.04 <= y + PUSH_ROOM * DIRECTIONS[d][1] <= 0.96]
        fields["direction"] = words["direction"] = room[rng.integers(len(room))]
    templates = TEMPLATES[family]
    instruction = templates[rng.integers(len(templates))].format(**words)
    task = Task(
        family=family,
        instruction=instruction,
        target=target,
        start=(float(scene.positions[target, 0]), float(scene.positions[target, 1])),
        composition=(COLOR_NAMES[color], SHAPES[shape], family),
        **fields,  # type: ignore[arg-type]
    )
    return task, scene


def parse_instruction(text: str) -> tuple[str, str, str] | None:
    """(color, shape, family) of an instruction from the grammar, or None if it is not one."""
    import re

    fills = {
        "target": r"(?P<color>\w+) (?P<shape>\w+)",
        "dest": r"\w+ \w+",
        "region": "|".join(REGIONS),
        "direction": "|".join(DIRECTIONS),
    }
    for family, templates in TEMPLATES.items():
        for template in templates:
            pattern = re.escape(template)
            for name, fill in fills.items():
                pattern = pattern.replace(re.escape("{" + name + "}"), f"(?:{fill})")
            match = re.fullmatch(pattern, text.strip())
            if match and match["color"] in COLOR_NAMES and match["shape"] in SHAPES:
                return match["color"], match["shape"], family
    return None


def goal_point(task: Task, scene: Scene) -> np.ndarray:
    """float64 [2]: where the task takes its target: the destination object (place_on), the region's
    centre (place_in), the start moved by the success distance (push), the target itself (reach)."""
    if task.family == "place_on":
        return scene.positions[task.destination].copy()
    if task.family == "place_in":
        return np.asarray(REGIONS[task.region], dtype=np.float64)
    if task.family == "push":
        return np.asarray(task.start) + PUSH_SUCCESS_DISTANCE * np.asarray(DIRECTIONS[task.direction])
    if task.family == "reach":
        return scene.positions[task.target].copy()
    raise ValueError(f"task.family: unknown {task.family!r}")


def is_success(task: Task, scene: Scene) -> bool:
    """The task's success predicate on the current scene."""
    pos = scene.positions[task.target]
    if task.family == "reach":
        dist = np.linalg.norm(scene.ee[:2] - pos)
        return bool(dist < REACH_TOLERANCE and scene.ee[2] < REACH_MAX_HEIGHT)
    if scene.held == task.target:
        return False
    if task.family == "place_on":
        return bool(np.linalg.norm(pos - scene.positions[task.destination]) < PLACE_ON_TOLERANCE)
    if task.family == "place_in":
        cx, cy = REGIONS[task.region]
        half = REGION_SIZE / 2
        return bool(abs(pos[0] - cx) < half and abs(pos[1] - cy) < half)
    if task.family == "push":
        moved = (pos - np.asarray(task.start)) @ np.asarray(DIRECTIONS[task.direction])
        return bool(moved >= PUSH_SUCCESS_DISTANCE)
    raise ValueError(f"task.family: unknown {task.family!r}")
