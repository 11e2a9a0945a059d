"""From `Example`s to a `KIBatch`: images, prompt ids, suffix ids with per-token loss tags, masks.

Sequence layout (pi0.5): prefix = [image tokens] <bos> prompt words [state bins], bidirectional;
suffix = <ans> answer <eos> (LM examples) and/or <act> FAST ids <eos> (robot examples), causal.
The suffix tags mark the tokens that are *targets*; the token before each one predicts it.
The batch itself is `kivla.model.kibatch.KIBatch`; the vocabulary layout `kivla.model.vocab`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from kivla.data.example import Example
from kivla.model.config import STATE_INPUTS
from kivla.model.kibatch import KIBatch
from kivla.model.text import ACT, ANS, BOS, EOS, PAD
from kivla.model.vocab import (
    STATE_BINS,
    ActionTokenizerLike,
    TextTokenizerLike,
    VocabLayout,
    discretize_state,
)

log = logging.getLogger(__name__)


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    length = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


class BatchBuilder:
    """Collates `Example`s into `KIBatch`es for one policy's vocabulary and shapes."""

    def __init__(
        self,
        text_tokenizer: TextTokenizerLike,
        action_tokenizer: ActionTokenizerLike | None = None,
        *,
        image_size: int = 64,
        horizon: int = 50,
        action_dim: int = 7,
        state_dim: int = 8,
        state_input: str = "prompt",
        max_prompt_len: int = 32,
        max_suffix_len: int = 64,
        layout: VocabLayout | None = None,
    ) -> None:
        self.text, self.action_tokenizer = text_tokenizer, action_tokenizer
        self.image_size, self.horizon, self.action_dim, self.state_dim = (
            image_size,
            horizon,
            action_dim,
            state_dim,
        )
        self.state_input, self.max_prompt_len, self.max_suffix_len = (
            state_input,
            max_prompt_len,
            max_suffix_len,
        )
        if state_input not in STATE_INPUTS:
            raise ValueError(f"state_input: expected one of {STATE_INPUTS}, got {state_input!r}")
        action_vocab = action_tokenizer.vocab_size if action_tokenizer is not None else 0
        self.layout = layout or VocabLayout(
            text_tokenizer.vocab_size, STATE_BINS if state_input == "prompt" else 0, action_vocab
        )
        if self.layout.action_vocab_size < action_vocab:
            raise ValueError(
                f"layout.action_vocab_size: {self.layout.action_vocab_size} < tokenizer's {action_vocab}"
            )
        self.ids = {tok: text_tokenizer.token_id(tok) for tok in (PAD, BOS, EOS, ACT, ANS)}
        self.truncated = 0  # examples whose prompt or suffix was cut to the max length

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    # -- pieces ---------------------------------------------------------------------------------
    def _images(self, images: Sequence[np.ndarray | None]) -> tuple[Tensor, Tensor]:
        s = self.image_size
        out = np.zeros((len(images), 3, s, s), dtype=np.float32)
        present = np.zeros(len(images), dtype=bool)
        for i, image in enumerate(images):
            if image is None:
                continue
            image = np.asarray(image)
            if image.shape != (s, s, 3):
                raise ValueError(f"image: example {i} expected uint8 [{s}, {s}, 3], got shape {image.shape}")
            if image.dtype != np.uint8:
                raise ValueError(f"image: example {i} expected dtype uint8, got {image.dtype}")
            out[i] = image.transpose(2, 0, 1) / 255.0
            present[i] = True
        return torch.from_numpy(out), torch.from_numpy(present)

    def _states(self, states: Sequence[np.ndarray | None]) -> Tensor:
        out = np.zeros((len(states), self.state_dim), dtype=np.float32)
        for i, state in enumerate(states):
            if state is None:
                continue
            state = np.asarray(state, dtype=np.float32)
            if state.shape != (self.state_dim,):
                raise ValueError(f"state: example {i} expected shape [{self.state_dim}], got {state.shape}")
            if not np.isfinite(state).all():
                raise ValueError(f"state: example {i} contains NaN or inf")
            out[i] = state
        return torch.from_numpy(out)

    def _prefix(self, prompts: Sequence[str], states: Tensor, has_state: Sequence[bool]) -> list[list[int]]:
        rows = []
        for prompt, state, with_state in zip(prompts, states.numpy(), has_state, strict=True):
            state_ids = []
            if self.state_input == "prompt" and with_state:
                state_ids = (discretize_state(state) + self.layout.state_offset).tolist()
            words = self.text.encode(prompt)
            room = self.max_prompt_len - 1 - len(state_ids)
            if len(words) > room:
                self.truncated += 1
                words = words[: max(room, 0)]
            rows.append([self.ids[BOS], *words, *state_ids])
        return rows

    # -- public ---------------------------------------------------------------------------------
    def collate(self, examples: Sequence[Example]) -> KIBatch:
        """Examples (robot and language, mixed) -> one padded KIBatch with loss tags."""
        if not examples:
            raise ValueError("examples: expected at least one Example")
        h, d = self.horizon, self.action_dim
        b = len(examples)
        actions = np.zeros((b, h, d), dtype=np.float32)
        action_is_pad = np.ones((b, h), dtype=bool)
        for i, ex in enumerate(examples):
            if ex.actions is None:
                continue
            if ex.actions.shape != (h, d):
                raise ValueError(f"actions: example {i} expected shape [{h}, {d}], got {ex.actions.shape}")
            actions[i], action_is_pad[i] = ex.actions, ex.action_is_pad
        fast_rows = self._fast_tokens(examples, actions)

        suffixes, fast_tags, lm_tags = [], [], []
        for i, ex in enumerate(examples):
            row, fast_tag, lm_tag = [], [], []
            segments = []  # (tokens, is_fast_target, is_lm_target)
            if ex.lm:
                segments += [
                    ([self.ids[ANS]], False, False),
                    ([*self.text.encode(ex.answer), self.ids[EOS]], False, True),
                ]
            if i in fast_rows:
                segments += [([self.ids[ACT]], False, False), ([*fast_rows[i], self.ids[EOS]], True, False)]
            for tokens, is_fast, is_lm in segments:
                row += tokens
                fast_tag += [is_fast] * len(tokens)
                lm_tag += [is_lm] * len(tokens)
            if len(row) > self.max_suffix_len:
                self.truncated += 1
                row, fast_tag, lm_tag = (x[: self.max_suffix_len] for x in (row, fast_tag, lm_tag))
            suffixes.append(row)
            fast_tags.append(fast_tag)
            lm_tags.append(lm_tag)

        images, image_mask = self._images([ex.image for ex in examples])
        image_labels, has_labels = self._image_labels(examples)
        image_refs, has_refs = self._image_refs(examples)
        image_goal, has_goal = self._image_goals(examples)
        state = self._states([ex.state for ex in examples])
        has_state = [ex.state is not None for ex in examples]
        prefix = self._prefix([ex.prompt for ex in examples], state, has_state)
        prefix_ids, prefix_mask = _pad(prefix, self.ids[PAD])
        suffix_ids, suffix_mask = _pad(suffixes, self.ids[PAD])
        tag = lambda rows: _pad([[int(x) for x in r] for r in rows], 0)[0].bool()  # noqa: E731
        return KIBatch(
            images=images,
            image_mask=image_mask,
            prefix_ids=prefix_ids,
            prefix_mask=prefix_mask,
            suffix_ids=suffix_ids,
            suffix_mask=suffix_mask,
            state=state,
            suffix_loss={"fast": tag(fast_tags), "lm": tag(lm_tags)},
            actions=torch.from_numpy(actions),
            action_is_pad=torch.from_numpy(action_is_pad),
            loss_mask={
                "flow": torch.tensor([ex.flow for ex in examples]),
                "fast": torch.tensor([i in fast_rows for i in range(b)]),
                "lm": torch.tensor([ex.lm for ex in examples]),
                "vision": has_labels,
                "refer": has_refs & has_labels,
                "where": has_labels,
                "goal": has_goal,
            },
            image_labels=image_labels,
            image_refs=image_refs,
            image_goal=image_goal,
        )

    @staticmethod
    def _image_goals(examples: Sequence[Example]) -> tuple[Tensor | None, Tensor]:
        """Goals [B, 2] in [-1, 1] (None when no example has one) and which examples have one [B]."""
        has = torch.tensor([ex.image_goal is not None for ex in examples])
        if not has.any():
            return None, has
        out = torch.zeros(len(examples), 2)
        for i, ex in enumerate(examples):
            if ex.image_goal is not None:
                out[i] = torch.as_tensor(ex.image_goal, dtype=torch.float32) * 2 - 1
        return out, has

    @staticmethod
    def _image_refs(examples: Sequence[Example]) -> tuple[Tensor | None, Tensor]:
        """Referred label classes [B, 2, 256] (None when no example has any) and which examples have any."""
        has = torch.tensor([bool(ex.image_refs and any(ex.image_refs)) for ex in examples])
        if not has.any():
            return None, has
        out = torch.zeros(len(examples), 2, 256, dtype=torch.bool)
        for i, ex in enumerate(examples):
            for role, classes in enumerate(ex.image_refs or ()):
                out[i, role, list(classes)] = True
        return out, has

    def _image_labels(self, examples: Sequence[Example]) -> tuple[Tensor | None, Tensor]:
        """Dense labels [B, S, S] (None when no example has them) and which examples have them [B]."""
        has = torch.tensor([ex.image_labels is not None for ex in examples])
        if not has.any():
            return None, has
        s = self.image_size
        out = np.zeros((len(examples), s, s), dtype=np.uint8)
        for i, ex in enumerate(examples):
            if ex.image_labels is not None:
                if ex.image_labels.shape != (s, s):
                    raise ValueError(
                        f"image_labels: example {i} expected [{s}, {s}], got {ex.image_labels.shape}"
                    )
                out[i] = ex.image_labels
        return torch.from_numpy(out), has

    def _fast_tokens(self, examples: Sequence[Example], actions: np.ndarray) -> dict[int, list[int]]:
        """Backbone ids of the discrete action target of each example with the FAST loss on."""
        wanted = [i for i, ex in enumerate(examples) if ex.fast]
        if self.action_tokenizer is None or not wanted:
            return {}
        tokens = self.action_tokenizer.encode(actions[wanted])
        offset = self.layout.action_offset
        rows = {}
        for i, ids in zip(wanted, tokens, strict=True):
            ids = np.asarray(ids, dtype=np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= self.layout.action_vocab_size):
                raise ValueError(
                    f"action tokens: example {i} has ids outside [0, {self.layout.action_vocab_size})"
                )
            rows[i] = (ids + offset).tolist()
        return rows

    def observation(
        self,
        images: Sequence[np.ndarray | None],
        instructions: Sequence[str],
        states: Sequence[np.ndarray | None] | None = None,
    ) -> KIBatch:
        """A batch without targets for `KIPolicy.sample_actions`."""
        if len(images) != len(instructions):
            raise ValueError(f"instructions: expected {len(images)} (one per image), got {len(instructions)}")
        states = list(states) if states is not None else [None] * len(images)
        if len(states) != len(images):
            raise ValueError(f"states: expected {len(images)} (one per image), got {len(states)}")
        image_tensor, image_mask = self._images(images)
        state = self._states(states)
        prefix_ids, prefix_mask = _pad(self._prefix(instructions, state, [s is not None for s in states]),
                                       self.ids[PAD])  # fmt: skip
        b = len(images)
        return KIBatch(
            images=image_tensor,
            image_mask=image_mask,
            prefix_ids=prefix_ids,
            prefix_mask=prefix_mask,
            suffix_ids=torch.zeros(b, 0, dtype=torch.long),
            suffix_mask=torch.zeros(b, 0, dtype=torch.bool),
            state=state,
        )
