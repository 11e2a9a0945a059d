"""Random batches shaped like real ones, for the gradient audit, benchmarks and tests.

Token ids are random but land in the right ranges (FAST ids at the end of the vocabulary), action
chunks are smooth random curves, and every example carries the losses a real one would.
"""

from __future__ import annotations

import torch

from kivla.model.config import KIPolicyConfig
from kivla.model.kibatch import KIBatch


def synthetic_batch(
    config: KIPolicyConfig,
    batch_size: int = 8,
    prompt_len: int = 32,
    fast_len: int = 40,
    answer_len: int = 8,
    num_language: int = 0,
    action_vocab_size: int = 256,
    seed: int = 0,
) -> KIBatch:
    """`batch_size - num_language` robot examples (flow + FAST) then `num_language` VQA-like ones (LM).

    Suffix of a robot example: <act> FAST ids <eos> when the recipe has a discrete target, else
    nothing; of a language example: <ans> answer <eos>. Ids 2..5 play <bos> <eos> <act> <ans>.
    """
    if not 0 <= num_language <= batch_size:
        raise ValueError(f"num_language: expected in [0, {batch_size}], got {num_language}")
    g = torch.Generator().manual_seed(seed)
    c, b = config, batch_size
    h, d, s, vocab = c.expert.horizon, c.expert.action_dim, c.backbone.image_size, c.backbone.vocab_size
    action_vocab_size = min(action_vocab_size, vocab // 2)
    text_hi = vocab - action_vocab_size
    robot = torch.arange(b) < b - num_language

    prefix_ids = torch.randint(6, text_hi, (b, prompt_len), generator=g)
    prefix_ids[:, 0] = 2
    prefix_mask = torch.ones(b, prompt_len, dtype=torch.bool)
    with_fast = c.discrete_target != "none"
    length = max(fast_len + 2 if with_fast else 0, answer_len + 2 if num_language else 0)
    suffix_ids = torch.zeros(b, length, dtype=torch.long)
    suffix_mask = torch.zeros(b, length, dtype=torch.bool)
    fast_tag = torch.zeros(b, length, dtype=torch.bool)
    lm_tag = torch.zeros(b, length, dtype=torch.bool)
    for i in range(b):
        if robot[i] and with_fast:
            ids = torch.randint(text_hi, vocab, (fast_len,), generator=g)
            suffix_ids[i, : fast_len + 2] = torch.cat([torch.tensor([4]), ids, torch.tensor([3])])
            suffix_mask[i, : fast_len + 2] = True
            fast_tag[i, 1 : fast_len + 2] = True
        elif not robot[i]:
            ids = torch.randint(6, text_hi, (answer_len,), generator=g)
            suffix_ids[i, : answer_len + 2] = torch.cat([torch.tensor([5]), ids, torch.tensor([3])])
            suffix_mask[i, : answer_len + 2] = True
            lm_tag[i, 1 : answer_len + 2] = True

    # Smooth chunks: a few random cosines per dim, within [-1, 1].
    time = torch.linspace(0, 1, h)[None, :, None]
    freq = torch.rand(b, 1, d, generator=g) * 3
    phase = torch.rand(b, 1, d, generator=g) * 6.28
    actions = torch.cos(freq * 6.28 * time + phase) * 0.8 * robot[:, None, None]
    action_is_pad = torch.zeros(b, h, dtype=torch.bool)
    action_is_pad[:, h - h // 5 :] = torch.rand(b, 1, generator=g) < 0.3  # some episodes end early
    action_is_pad |= ~robot[:, None]
    return KIBatch(
        images=torch.rand(b, 3, s, s, generator=g),
        image_mask=torch.ones(b, dtype=torch.bool),
        prefix_ids=prefix_ids,
        prefix_mask=prefix_mask,
        suffix_ids=suffix_ids,
        suffix_mask=suffix_mask,
        state=torch.rand(b, c.expert.state_dim, generator=g) * 2 - 1,
        suffix_loss={"fast": fast_tag, "lm": lm_tag},
        actions=actions.float(),
        action_is_pad=action_is_pad,
        loss_mask={"flow": robot.clone(), "fast": robot & with_fast, "lm": ~robot},
    )
