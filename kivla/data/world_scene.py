"""The tabletop scene: objects, the end effector, scene sampling and numpy rendering.

Coordinates: the table is the unit square, x to the right and y downwards (image convention),
so pixel (row, col) covers the point ((col + 0.5) / S, (row + 0.5) / S). The end effector has a
planar position (x, y), a height z in [0, 1] (0 = touching the table) and a gripper opening g in
[0, 1] (1 = open). Objects are flat shapes; a held object moves with the end effector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "purple": (145, 60, 185),
    "orange": (245, 135, 20),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

TABLE_RGB = np.array([205, 195, 175], dtype=np.uint8)
REGION_RGB = np.array([170, 162, 146], dtype=np.uint8)
OBJECT_RADIUS = 0.07
REGION_SIZE = 0.22  # corner regions are squares of this side at the four table corners
SPAWN_LOW, SPAWN_HIGH = 0.24, 0.76  # objects start outside the corner regions
MIN_OBJECT_DISTANCE = 0.19
EE_RADIUS = 0.035
# Dense labels of a rendered image (Renderer.label_map): 0 table, 1 + color·3 + shape for an
# object's pixels, GRIPPER_LABEL for the end effector's ring.
NUM_OBJECT_LABELS = len(COLORS) * len(SHAPES)
GRIPPER_LABEL = NUM_OBJECT_LABELS + 1
NUM_LABELS = NUM_OBJECT_LABELS + 2


@dataclass
class Scene:
    """Mutable world state. Object arrays are indexed by object id."""

    positions: np.ndarray  # float64 [N, 2] object centers (x, y)
    colors: np.ndarray  # int64 [N] index into COLOR_NAMES
    shapes: np.ndarray  # int64 [N] index into SHAPES
    ee: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.5, 1.0, 1.0]))  # (x, y, z, g)
    held: int = -1  # id of the held object, -1 when none
    hold_offset: np.ndarray = field(default_factory=lambda: np.zeros(2))  # held object center - ee (x, y)

    @property
    def num_objects(self) -> int:
        return len(self.positions)

    def name(self, i: int) -> str:
        """`"red circle"` for object i."""
        return f"{COLOR_NAMES[self.colors[i]]} {SHAPES[self.shapes[i]]}"

    def copy(self) -> Scene:
        return Scene(
            self.positions.copy(),
            self.colors.copy(),
            self.shapes.copy(),
            self.ee.copy(),
            self.held,
            self.hold_offset.copy(),
        )


def sample_scene(
    rng: np.random.Generator,
    num_objects: int,
    first: tuple[int, int] | None = None,
) -> Scene:
    """Draw `num_objects` objects with distinct (color, shape) pairs at well-separated positions.

    `first` fixes the (color, shape) of object 0 (the task's target). The end effector starts high
    and open at a random point of the table.
    """
    pairs = [(c, s) for c in range(len(COLOR_NAMES)) for s in range(len(SHAPES))]
    if first is not None:
        pairs.remove(first)
    picks = [pairs[i] for i in rng.permutation(len(pairs))[: num_objects - (first is not None)]]
    if first is not None:
        picks = [first, *picks]
    positions = _separated_points(rng, num_objects)
    ee = np.array([*rng.uniform(0.1, 0.9, size=2), 1.0, 1.0])
    return Scene(
        positions=positions,
        colors=np.array([c for c, _ in picks], dtype=np.int64),
        shapes=np.array([s for _, s in picks], dtype=np.int64),
        ee=ee,
    )


def _separated_points(rng: np.random.Generator, n: int) -> np.ndarray:
    # Rejection sampling; with at most 4 objects in the spawn square this accepts within a few tries.
    for _ in range(1000):
        points = rng.uniform(SPAWN_LOW, SPAWN_HIGH, size=(n, 2))
        dist = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(n)
        if dist.min() >= MIN_OBJECT_DISTANCE:
            return points
    raise RuntimeError("could not place objects; lower num_objects")


def label_words() -> list[tuple[str, ...]]:
    """The words that name each label class (index = class): () for the table, (color, shape,
    the shape's plural) for an object ("how many circles are there?" names every circle), ("gripper",)
    for the end effector. The vision loss's words readout reads the first two."""
    objects = [(c, s, f"{s}s") for c in COLOR_NAMES for s in SHAPES]
    return [(), *objects, ("gripper",)]


def is_object_label(labels):
    """Elementwise, for a numpy array or torch tensor of label classes: True for an object's class
    (not the table's 0, not the gripper's)."""
    return (labels > 0) & (labels <= NUM_OBJECT_LABELS)


def object_labels(scene: Scene) -> np.ndarray:
    """int64 [N]: the label class of each object, 1 + color·3 + shape (unique within a scene)."""
    return 1 + scene.colors * len(SHAPES) + scene.shapes


def region_mask_template(size: int) -> np.ndarray:
    """bool [S, S]: pixels of the four corner regions (drawn darker so the camera sees them)."""
    u = (np.arange(size) + 0.5) / size
    near = (u < REGION_SIZE) | (u > 1 - REGION_SIZE)
    return near[:, None] & near[None, :]


class Renderer:
    """Top-down RGB camera; vectorized masks over a cached pixel grid."""

    def __init__(self, size: int = 64):
        if not 32 <= size <= 256:
            raise ValueError(f"image_size: expected 32..256, got {size}")
        self.size = size
        u = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.px = u[None, :]  # [1, S] x of pixel centers
        self.py = u[:, None]  # [S, 1] y of pixel centers
        self.background = np.empty((size, size, 3), dtype=np.uint8)
        self.background[:] = TABLE_RGB
        self.background[region_mask_template(size)] = REGION_RGB

    def shape_mask(self, shape: int, x: float, y: float, r: float = OBJECT_RADIUS) -> np.ndarray:
        """bool [S, S]: pixels covered by a shape centered at (x, y)."""
        dx, dy = self.px - x, self.py - y
        if SHAPES[shape] == "circle":
            return dx * dx + dy * dy <= r * r
        if SHAPES[shape] == "square":
            half = 0.85 * r
            return (np.abs(dx) <= half) & (np.abs(dy) <= half)
        # Equilateral triangle pointing up (towards smaller y), circumradius r.
        return (dy <= 0.5 * r) & (np.abs(dx) <= (dy + r) / np.sqrt(3.0))

    def _draw_order(self, scene: Scene) -> list[int]:
        order = [i for i in range(scene.num_objects) if i != scene.held]
        return [*order, scene.held] if scene.held >= 0 else order

    def render(self, scene: Scene) -> np.ndarray:
        """uint8 [S, S, 3] image of the scene; the held object is drawn last (it is lifted)."""
        image = self.background.copy()
        for i in self._draw_order(scene):
            x, y = scene.positions[i]
            image[self.shape_mask(int(scene.shapes[i]), x, y)] = COLORS[COLOR_NAMES[scene.colors[i]]]
        ring, center = self._gripper_masks(scene.ee)
        image[ring] = (250, 250, 250) if scene.ee[3] >= 0.5 else (20, 20, 20)
        image[center] = (60, 60, 60)
        return image

    def label_map(self, scene: Scene) -> np.ndarray:
        """uint8 [S, S]: what `render` draws at each pixel (0 table, 1 + color·3 + shape, or
        GRIPPER_LABEL): dense targets that the world gives for free, used to teach vision."""
        labels = np.zeros((self.size, self.size), dtype=np.uint8)
        classes = object_labels(scene)
        for i in self._draw_order(scene):
            x, y = scene.positions[i]
            labels[self.shape_mask(int(scene.shapes[i]), x, y)] = classes[i]
        ring, center = self._gripper_masks(scene.ee)
        labels[ring | center] = GRIPPER_LABEL
        return labels

    def _gripper_masks(self, ee: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # A ring whose radius grows with height (white when open, black when closed), and its center.
        x, y, z, _ = ee
        radius = EE_RADIUS * (1.0 + 0.6 * z)
        width = max(0.012, 1.5 / self.size)
        d2 = (self.px - x) ** 2 + (self.py - y) ** 2
        ring = (d2 <= radius**2) & (d2 >= (radius - width) ** 2)
        return ring, d2 <= (0.6 * width) ** 2 + (0.5 / self.size) ** 2


def labelled_images(rng: np.random.Generator, n: int, renderer: Renderer) -> tuple[np.ndarray, np.ndarray]:
    """n random scenes (2-4 objects, the gripper anywhere, open or closed) -> images uint8
    [n, S, S, 3] and their label maps uint8 [n, S, S]: what teaches an image encoder to see."""
    images, labels = [], []
    for _ in range(n):
        scene = sample_scene(rng, int(rng.integers(2, 5)))
        scene.ee = np.array([*rng.uniform(0.1, 0.9, 2), rng.uniform(0, 1), rng.integers(0, 2)])
        images.append(renderer.render(scene))
        labels.append(renderer.label_map(scene))
    return np.stack(images), np.stack(labels)
