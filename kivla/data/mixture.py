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
        size = image_size or (
            robot.info["features"][robot.image_key]["shape"][0]
            if robot is not None and robot.image_key
            else 64
        )
        self.language = {
            kind: language_examples(
                seed=seed * 4 + i,
                kinds=(kind,),
                exclude_question_types=exclude_question_types,
                image_size=size,
            )
            for i, kind in enumerate(SOURCES[1:])
            if self.probs[SOURCES.index(kind)] > 0
        }

    def robot_example(self, row: int) -> Example:
        item = self.robot[row]
        actions, state = item["actions"], item["state"]
        if self.normalizer is not None:
            actions = self.normalizer.normalize(self.robot.action_key, actions)
            state = self.normalizer.normalize(self.robot.state_key, state)
        return Example(
            prompt=item["task"],
            image=item.get("image"),
            actions=actions,
            action_is_pad=item["action_is_pad"],
            state=state,
            kind="robot",
            flow=True,
            fast=True,
        )

    def __iter__(self) -> Iterator[Example]:
        while True:
            yield self.next()

    def next(self) -> Example:
        source = SOURCES[self.rng.choice(len(SOURCES), p=self.probs)]
        if source == "robot":
            return self.robot_example(int(self.rng.integers(len(self.robot))))
        return next(self.language[source]).to_example()

    def sample(self, n: int) -> list[Example]:
        """The next n examples of the stream."""
        return [self.next() for _ in range(n)]
