"""`Example`: one training example as it leaves the data package, with its loss masks.

A robot example carries an action chunk (flow and FAST losses); a caption / VQA / text example
carries an answer (LM loss). The masks travel with the example so that batching and the policy
never guess what an example is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Example:
    prompt: str  # instruction (robot), question (VQA), caption request, or text prefix
    image: np.ndarray | None = None  # uint8 [S, S, 3]; None for text-only examples
    answer: str | None = None  # LM target text
    actions: np.ndarray | None = None  # float32 [H, D], normalized to about [-1, 1]
    action_is_pad: np.ndarray | None = None  # bool [H]: steps past the episode end
    state: np.ndarray | None = None  # float32 [S_dim], normalized
    kind: str = "robot"  # robot | caption | vqa:<question type> | text
    flow: bool = False  # flow-matching loss on `actions`
    fast: bool = False  # discrete-target cross-entropy on the tokens of `actions`
    lm: bool = False  # next-token cross-entropy on `answer`
    # Dense labels of `image` (the world's Renderer.label_map), the target of the vision loss.
    image_labels: np.ndarray | None = None  # uint8 [S, S]
    # Label classes the prompt refers to (first, second), the target of the referring loss.
    image_refs: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    # Where the demonstration takes the instruction's target: (x, y) in [0, 1] of the image.
    image_goal: np.ndarray | None = None  # float32 [2]

    def __post_init__(self) -> None:
        if (self.flow or self.fast) and self.actions is None:
            raise ValueError(f"Example.actions: required when flow or fast loss is on (kind={self.kind!r})")
        if self.lm and not self.answer:
            raise ValueError(f"Example.answer: required when the lm loss is on (kind={self.kind!r})")
        if self.actions is not None:
            if self.actions.ndim != 2:
                raise ValueError(f"Example.actions: expected shape [H, D], got {self.actions.shape}")
            if not np.isfinite(self.actions).all():
                raise ValueError("Example.actions: contains NaN or inf")
            if self.action_is_pad is None:
                self.action_is_pad = np.zeros(self.actions.shape[0], dtype=bool)
            elif self.action_is_pad.shape != self.actions.shape[:1]:
                raise ValueError(
                    f"Example.action_is_pad: expected shape [{self.actions.shape[0]}], "
                    f"got {self.action_is_pad.shape}"
                )
        if self.image is not None and (self.image.ndim != 3 or self.image.shape[2] != 3):
            raise ValueError(f"Example.image: expected uint8 [S, S, 3], got shape {self.image.shape}")
        goal = None if self.image_goal is None else np.asarray(self.image_goal)
        if goal is not None and (
            self.image is None or goal.shape != (2,) or not ((goal >= 0) & (goal <= 1)).all()
        ):
            raise ValueError(
                f"Example.image_goal: expected (x, y) in [0, 1] of an image, got {self.image_goal!r}"
                + ("" if self.image is not None else " without an image")
            )
        if self.image_labels is not None and (
            self.image is None or self.image_labels.shape != self.image.shape[:2]
        ):
            raise ValueError(
                "Example.image_labels: expected [S, S] matching the image, got "
                f"{self.image_labels.shape} for image {None if self.image is None else self.image.shape}"
            )
