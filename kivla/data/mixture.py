"""`MixtureSampler`: robot action chunks interleaved with caption / VQA / text examples.

Each draw picks a source with probability proportional to `ratios` (seeded), so over many draws
the mix matches the ratios; robot examples carry the flow and FAST losses, language examples the
LM loss. Robot actions and states come out quantile-normalized.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kivla.data.example import Example
from kivla.data.language import language_examples
from kivla.data.lerobot_format import GOAL_KEY, GOAL_UNITS, LABELS_KEY, REFER_KEY
from kivla.data.normalize import QuantileNormalizer

SOURCES: tuple[str, ...] = ("robot", "caption", "vqa", "text")


class MixtureSampler:
    """Seeded, unbounded stream of `Example`s drawn from a robot dataset and the language data.

    robot: a `LeRobotDataset` (or None when ratios["robot"] == 0). If it has no normalizer, actions
    and states are normalized with `normalizer`, or one built from the dataset's stats.json.
    """

    def __init__(
        self,
        robot=None,
        ratios: dict[str, float] | None = None,
        seed: int = 0,
        normalizer: QuantileNormalizer | None = None,
        exclude_question_types: tuple[str, ...] = (),
        image_size: int | None = None,
    ):
        ratios = dict(ratios or {"robot": 1.0})
        unknown = [k for k in ratios if k not in SOURCES]
        if unknown:
            raise ValueError(f"ratios: unknown sources {unknown}; expected keys among {SOURCES}")
        weights = np.array([float(ratios.get(k, 0.0)) for k in SOURCES])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"ratios: expected non-negative weights with a positive sum, got {ratios}")
        if weights[0] > 0 and robot is None:
            raise ValueError("robot: a dataset is required when ratios['robot'] > 0")
        self.robot, self.probs = robot, weights / weights.sum()
        self.rng = np.random.default_rng([seed, 11])
        self.normalizer = None
        if robot is not None and getattr(robot, "normalizer", None) is None:
            self.normalizer = normalizer or QuantileNormalizer.from_stats(
                robot.stats, (robot.action_key, robot.state_key)
            )
        self.image_size = image_size or (
            robot.info["features"][robot.image_key]["shape"][0]
            if robot is not None and robot.image_key
            else 64
        )
        self.exclude_question_types = tuple(exclude_question_types)
        if self.probs[SOURCES.index("vqa")] > 0:  # fail now, not at the first VQA draw
            next(language_examples(seed, 1, ("vqa",), self.exclude_question_types, self.image_size))

    def robot_example(self, row: int) -> Example:
        item = self.robot[row]
        actions, state = item["actions"], item["state"]
        if self.normalizer is not None:
            actions = self.normalizer.normalize(self.robot.action_key, actions)
            state = self.normalizer.normalize(self.robot.state_key, state)
        labels, refs = self.robot_annotations(item)
        return Example(
            prompt=item["task"],
            image=item.get("image"),
            actions=actions,
            action_is_pad=item["action_is_pad"],
            state=state,
            kind="robot",
            flow=True,
            fast=True,
            image_labels=labels,
            image_refs=refs,
            image_goal=self.robot_goal(item),
        )

    @property
    def robot_has_labels(self) -> bool:
        """True when the robot frames carry the world's label maps (the dense vision losses apply)."""
        return self.robot is not None and LABELS_KEY in getattr(self.robot, "annotation_keys", ())

    def robot_annotations(self, item: dict) -> tuple[np.ndarray | None, tuple | None]:
        """(label map uint8 [S, S], referred classes ((target,), (destination,))) of a robot frame,
        (None, None) for a dataset without the world's annotations."""
        notes = item.get("annotations", {})
        if LABELS_KEY not in notes or item.get("image") is None:
            return None, None
        size = item["image"].shape[0]
        labels = notes[LABELS_KEY].astype(np.uint8).reshape(size, size)
        refer = notes.get(REFER_KEY)
        refs = None if refer is None else tuple((int(c),) if c > 0 else () for c in refer[:2])
        return labels, refs

    @staticmethod
    def robot_goal(item: dict) -> np.ndarray | None:
        """Where the frame's episode takes the instruction's target, float32 (x, y) in [0, 1] of the
        image (`annotation.goal`), or None for a dataset without it or a frame without an image."""
        goal = item.get("annotations", {}).get(GOAL_KEY)
        if goal is None or item.get("image") is None:
            return None
        return np.asarray(goal[:2], dtype=np.float32) / GOAL_UNITS

    def draw_source(self, rng: np.random.Generator) -> str:
        """The source of the next example: the first draw `draw` makes from `rng`."""
        return SOURCES[int(rng.choice(len(SOURCES), p=self.probs))]

    def draw(self, rng: np.random.Generator) -> Example:
        """One example drawn with `rng` alone: a pure function of the generator's state."""
        source = self.draw_source(rng)
        if source == "robot":
            return self.robot_example(int(rng.integers(len(self.robot))))
        stream = language_examples(
            seed=int(rng.integers(2**31)), kinds=(source,), image_size=self.image_size,
            exclude_question_types=self.exclude_question_types,
        )  # fmt: skip
        return next(stream).to_example()

    def __iter__(self) -> Iterator[Example]:
        while True:
            yield self.next()

    def next(self) -> Example:
        return self.draw(self.rng)

    def sample(self, n: int) -> list[Example]:
        """The next n examples of the stream."""
        return [self.next() for _ in range(n)]
