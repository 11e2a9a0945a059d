"""The backbone as a language model: answer log-likelihoods and greedy answers (for measuring
language retention: VQA / caption accuracy and perplexity before and after robot training)."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from kivla.model.kibatch import KIBatch
from kivla.model.policy import KIPolicy


@torch.no_grad()
def answer_logprobs(policy: KIPolicy, batch: KIBatch, name: str = "lm") -> tuple[Tensor, Tensor]:
    """Summed log-probability [B] of each example's suffix targets tagged `name`, and their count [B].

    Perplexity over a data set: exp(−Σ logprob / Σ count)."""
    if name not in batch.suffix_loss:
        raise ValueError(f"name: expected one of {sorted(batch.suffix_loss)}, got {name!r}")
    out = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                          batch.suffix_ids, batch.suffix_mask)  # fmt: skip
    targets = batch.suffix_loss[name][:, 1:]  # [B, Ls-1]
    if out.suffix_hidden is None or not targets.any():
        zeros = batch.images.new_zeros(batch.batch_size)
        return zeros, zeros
    logp = F.log_softmax(policy.backbone.lm_logits(out.suffix_hidden[:, :-1]).float(), dim=-1)
    token_logp = logp.gather(-1, batch.suffix_ids[:, 1:, None]).squeeze(-1)  # [B, Ls-1]
    return (token_logp * targets).sum(dim=1), targets.sum(dim=1).to(token_logp.dtype)


@torch.no_grad()
def greedy_answers(
    policy: KIPolicy,
    batch: KIBatch,
    start_id: int,
    eos_id: int,
    max_new_tokens: int = 8,
    allowed_vocab: int | None = None,
) -> list[list[int]]:
    """Greedy answer ids (without `start_id` and `eos_id`) for an observation batch.

    The suffix starts as [start_id] (e.g. `<ans>`); each step reruns the backbone over the prefix
    and the answer so far (answers are a few tokens). `allowed_vocab`: only ids below it may be
    produced (e.g. the text vocabulary, so that FAST or state ids never come out).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected >= 1, got {max_new_tokens}")
    policy.validate(batch, targets=False)
    b = batch.batch_size
    suffix = torch.full((b, 1), start_id, dtype=torch.long, device=batch.prefix_ids.device)
    done = torch.zeros(b, dtype=torch.bool, device=suffix.device)
    for _ in range(max_new_tokens):
        step = dataclasses.replace(
            batch, suffix_ids=suffix, suffix_mask=torch.ones_like(suffix, dtype=torch.bool)
        )
        out = policy.backbone(step.images, step.image_mask, step.prefix_ids, step.prefix_mask,
                              step.suffix_ids, step.suffix_mask)  # fmt: skip
        logits = policy.backbone.lm_logits(out.suffix_hidden[:, -1])  # [B, V]
        if allowed_vocab is not None:
            logits[:, allowed_vocab:] = float("-inf")
        next_id = torch.where(done, torch.full_like(done, eos_id, dtype=torch.long), logits.argmax(dim=-1))
        suffix = torch.cat([suffix, next_id[:, None]], dim=1)
        done |= next_id == eos_id
        if done.all():
            break
    answers = []
    for row in suffix[:, 1:].tolist():
        answers.append(row[: row.index(eos_id)] if eos_id in row else row)
    return answers
