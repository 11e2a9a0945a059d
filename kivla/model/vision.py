"""Dense vision targets: each object of an image owns one image token.

The world knows what it draws at every pixel (`Renderer.label_map`), so each image gives dense
targets for free. The token whose patch holds an object's centroid must name the object's class
(colour and shape; the gripper is a class too), every other token "nothing" (the `vision` loss);
after a backbone layer, tokens must mark the objects the prompt refers to (the `refer` loss);
each object's token must say where on the table the object's centre lies (the `where` loss): the
expert reads image tokens through attention, a weighted sum of their values, so a position it can
act on has to be written into the tokens' features, linearly and finer than the token grid.
This teaches the image pathway to see, and to bind words to regions, before the language loss has
to discover either (the way PaliGemma's vision encoder was trained before its language model saw
it; PaliGemma's pretraining mix also has referring tasks). See docs/learning.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def object_token_labels(labels: Tensor, num_labels: int, patch_size: int) -> Tensor:
    """uint8 / long [B, S, S] pixel labels -> long [B, (S/p)^2]: each class that appears in an image
    is assigned to the one token whose patch holds the centroid of its pixels; other tokens are 0.
    One token per object: the image tokens become object slots (counting, comparing positions)."""
    return object_tokens(labels, num_labels, patch_size)[0]


def object_tokens(labels: Tensor, num_labels: int, patch_size: int) -> tuple[Tensor, Tensor]:
    """`object_token_labels` [B, N], and the centre of each token's object float [B, N, 2]
    ((column, row) in token units from the image centre, in [-g/2, g/2]; 0 where a token owns nothing)."""
    b, s, _ = labels.shape
    g = s // patch_size
    one_hot = F.one_hot(labels.long(), num_labels).float()[..., 1:]  # [B, S, S, C-1]
    coords = (torch.arange(s, dtype=torch.float32, device=labels.device) + 0.5) / patch_size
    count = one_hot.sum((1, 2))  # [B, C-1]
    row = torch.einsum("bhwc,h->bc", one_hot, coords) / count.clamp(min=1)
    col = torch.einsum("bhwc,w->bc", one_hot, coords) / count.clamp(min=1)
    token = row.long().clamp(max=g - 1) * g + col.long().clamp(max=g - 1)  # [B, C-1]
    out = torch.zeros(b, g * g + 1, dtype=torch.long, device=labels.device)
    classes = torch.arange(1, num_labels, device=labels.device).expand(b, -1)
    # Absent classes write into a spare slot; lower classes (objects) win ties over higher ones
    # (the gripper is the last class) because scatter is applied in reverse order.
    token = torch.where(count > 0, token, g * g)
    out.scatter_(1, token.flip(1), classes.flip(1))
    owners = out[:, : g * g]
    centre = torch.stack([col, row], -1)  # [B, C-1, 2] in token units
    gathered = centre.gather(1, (owners - 1).clamp(min=0)[..., None].expand(-1, -1, 2))  # [B, N, 2]
    return owners, (gathered - g / 2) * (owners > 0)[..., None]


def referred_token_labels(token_labels: Tensor, refs: Tensor) -> Tensor:
    """token_labels long [B, N] (`object_token_labels`), refs bool [B, 2, >=C] (classes referred
    first / second) -> long [B, N]: 1 for tokens of first-referred objects, 2 for second, else 0."""
    first = refs[:, 0].gather(1, token_labels)  # [B, N]
    second = refs[:, 1].gather(1, token_labels)
    out = torch.where(second, 2, 0)
    return torch.where(first, 1, out) * (token_labels > 0)


def referred_objects(labels: Tensor, refs: Tensor, num_labels: int, patch_size: int) -> tuple[Tensor, Tensor]:
    """Pixel labels [B, S, S] and refs bool [B, 2, >=C] -> the tokens of the object referred first /
    second bool [B, 2, N], and that object's centre [B, 2, 2] ((column, row) in [-1, 1] over the
    token grid, the coordinates of `SpatialKeypoints`; 0 where a role has no object)."""
    owners, centres = object_tokens(labels, num_labels, patch_size)
    roles = referred_token_labels(owners, refs)  # [B, N]: 1 first, 2 second
    marked = torch.stack([roles == 1, roles == 2], dim=1)  # [B, 2, N]
    m = marked.float()
    centre = (m[..., None] * centres[:, None]).sum(2) / m.sum(-1, keepdim=True).clamp(min=1)
    grid = labels.shape[-1] // patch_size
    return marked, centre / (grid / 2)


def token_cross_entropy_per_example(logits: Tensor, targets: Tensor) -> Tensor:
    """logits [B, N, K], targets long [B, N] -> [B]: cross-entropy, mean over tokens."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return ce.view(targets.shape).mean(-1)
