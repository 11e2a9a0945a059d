"""Attention masks and position ids, as pure functions of the validity masks. True = may attend.

Backbone sequence: [prefix (image + prompt) | suffix (FAST or answer tokens)].
- prefix queries see every valid prefix key (bidirectional) and no suffix key;
- suffix queries see every valid prefix key and the valid suffix keys at or before them (causal).
Expert sequence: its queries see the valid prefix keys of the same layer and every expert key.
The suffix is not part of what the expert reads at all, so expert tokens never see FAST tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor


def backbone_attention_mask(prefix_valid: Tensor, suffix_valid: Tensor) -> Tensor:
    """bool [B, N, N], N = Np + Ls, from prefix_valid [B, Np] and suffix_valid [B, Ls].

    The diagonal is always allowed so that padded query rows are never empty (no NaN in softmax);
    padded rows are never read by a valid row, so this changes nothing that is used.
    """
    num_prefix = prefix_valid.shape[1]
    valid = torch.cat([prefix_valid, suffix_valid], dim=1)  # [B, N]
    n = valid.shape[1]
    index = torch.arange(n, device=valid.device)
    key_in_prefix = index[None, :] < num_prefix  # [1, N]
    causal = index[None, :] <= index[:, None]  # [N, N]: key j <= query i
    query_in_suffix = index[:, None] >= num_prefix  # [N, 1]
    structure = key_in_prefix | (query_in_suffix & causal)  # [N, N]
    allowed = structure[None] & valid[:, None, :]
    return allowed | torch.eye(n, dtype=torch.bool, device=valid.device)[None]


def expert_attention_mask(prefix_valid: Tensor, num_expert: int) -> Tensor:
    """bool [B, E, Np + E]: expert queries see valid prefix keys and all E expert keys."""
    b = prefix_valid.shape[0]
    expert_keys = torch.ones(b, num_expert, dtype=torch.bool, device=prefix_valid.device)
    keys = torch.cat([prefix_valid, expert_keys], dim=1)  # [B, Np + E]
    return keys[:, None, :].expand(b, num_expert, keys.shape[1])


def prefix_positions(prefix_valid: Tensor) -> Tensor:
    """long [B, Np]: RoPE positions that skip padding (0, 1, ... over the valid tokens)."""
    return (prefix_valid.long().cumsum(dim=1) - 1).clamp(min=0)


def following_positions(prefix_valid: Tensor, valid: Tensor) -> Tensor:
    """long [B, L]: positions of a right-padded block that follows the prefix."""
    start = prefix_valid.long().sum(dim=1, keepdim=True)  # [B, 1]
    return start + (valid.long().cumsum(dim=1) - 1).clamp(min=0)
