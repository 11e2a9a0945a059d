"""The backbone interface and the built-in tiny VLM.

A backbone runs [image tokens, prompt | suffix] once and yields what the action expert reads: each
layer's prefix keys/values (after RoPE) and the prefix validity mask, plus the hidden states of the
suffix (FAST / answer tokens) for the LM head. The expert never appears here: by construction no
backbone token can see an expert token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import Tensor, nn

from kivla.model.config import BackboneConfig
from kivla.model.layers import QKVProjection, RMSNorm, SwiGLU, additive_mask, attend, rope_tables
from kivla.model.masks import backbone_attention_mask, following_positions, prefix_positions
from kivla.model.naming import NamingAttention


@dataclass
class PrefixCache:
    """What the expert reads: per layer prefix K and V [B, kv_heads, Np, head_dim], valid [B, Np];
    and, for keypoints scored by the backbone's naming (`ExpertConfig.keypoint_naming`), the
    log-probability of each prompt token's word at each image token [B, n, Lp] (KIPolicy fills it)."""

    keys: list[Tensor]
    values: list[Tensor]
    valid: Tensor  # bool [B, Np]
    image_naming: Tensor | None = None  # float [B, n, Lp]

    def _map(self, fn) -> PrefixCache:
        naming = None if self.image_naming is None else fn(self.image_naming)
        return PrefixCache([fn(k) for k in self.keys], [fn(v) for v in self.values], self.valid, naming)

    def detach(self) -> PrefixCache:
        """Stop-gradient on everything the expert reads: the forward pass is identical, the
        backward pass stops here."""
        return self._map(lambda x: x.detach())

    def repeat(self, k: int) -> PrefixCache:
        """Each example k times along the batch (k flow times share one backbone pass)."""
        if k == 1:
            return self
        cache = self._map(lambda x: x.repeat_interleave(k, dim=0))
        cache.valid = self.valid.repeat_interleave(k, dim=0)
        return cache

    def select(self, index: Tensor) -> PrefixCache:
        """The examples at `index` (long [B'])."""
        cache = self._map(lambda x: x[index])
        cache.valid = self.valid[index]
        return cache


@dataclass
class BackboneOutput:
    cache: PrefixCache
    suffix_hidden: Tensor | None  # [B, Ls, W] final-normed hidden states of the suffix, None if Ls = 0
    # {layer: [B, Ni, W]}: image tokens after that many layers (0: embeddings), as asked for
    image_hidden: dict[int, Tensor] = field(default_factory=dict)
    # {layer: [B, heads, Lp + Ls, Np + Ls]}: that layer's attention probabilities from the text
    # queries (prompt, then suffix) over all keys (image, prompt, suffix), as asked for
    text_attention: dict[int, Tensor] = field(default_factory=dict)
    # naming attention (BackboneConfig.naming_labels): the object head's logits [B, Ni, classes],
    # and each text token's bias on the image tokens [B, Lp + Ls, Ni] (NamingAttention.looks)
    object_logits: Tensor | None = None
    naming_bias: Tensor | None = None


class Backbone(nn.Module):
    """Interface every backbone implements (built-in tiny VLM, HF adapters).

    Attributes the expert needs: `num_layers`, `num_kv_heads`, `head_dim`, `vocab_size`, `rope_theta`;
    `image_grid`: tokens per side when the prefix starts with a square grid of image tokens in
    row-major order (None otherwise; the expert's keypoints need it).
    """

    image_grid: int | None = None
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rope_theta: float

    def forward(
        self,
        images: Tensor,  # float [B, 3, S, S] in [0, 1]
        image_mask: Tensor,  # bool [B]: False for examples without an image
        prefix_ids: Tensor,  # long [B, Lp]
        prefix_mask: Tensor,  # bool [B, Lp]
        suffix_ids: Tensor | None = None,  # long [B, Ls]
        suffix_mask: Tensor | None = None,  # bool [B, Ls]
    ) -> BackboneOutput:
        raise NotImplementedError

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """[..., W] -> [..., vocab_size]."""
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"backbone": body parameters, "embeddings": token embeddings and LM head}."""
        raise NotImplementedError


class DecoderLayer(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        c = config
        self.attn_norm = RMSNorm(c.width)
        self.attn = QKVProjection(c.width, c.num_heads, c.num_kv_heads, c.head_dim)
        self.mlp_norm = RMSNorm(c.width)
        self.mlp = SwiGLU(c.width, c.mlp_hidden)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor, queries_from: int = 0,
        probs_from: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:  # fmt: skip
        """x [B, N, W] -> (x [B, N - queries_from, W], k [B, kv, N, hd], v [B, kv, N, hd], probs).

        Tokens before `queries_from` contribute keys/values only; their outputs are not computed.
        probs: the attention probabilities [B, h, N - probs_from, N] of the queries from `probs_from`
        on (None when not asked), the same numbers the attention used, with gradients."""
        q, k, v = self.attn(self.attn_norm(x), rope)
        probs = None
        if probs_from is not None:
            keys = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # [B, h, N, hd]
            scores = q[:, :, probs_from:] @ keys.transpose(-1, -2) / q.shape[-1] ** 0.5
            probs = (scores + mask[:, :, probs_from:]).float().softmax(-1)
        x = x[:, queries_from:]
        if x.shape[1] == 0:
            return x, k, v, probs
        x = x + self.attn.out(attend(q[:, :, queries_from:], k, v, mask[:, :, queries_from:]))
        x = x + self.mlp(self.mlp_norm(x))
        return x, k, v, probs


def image_stem(config: BackboneConfig) -> nn.Module:
    """[B, 3, S, S] -> [B, W, S/p, S/p]: a linear patch embedding, or log2(p) stride-2 3x3 convs
    ("conv_wide": from 64 channels instead of 32, and one stride-1 conv before the last)."""
    c = config
    if c.stem == "patch":
        return nn.Conv2d(3, c.width, kernel_size=c.patch_size, stride=c.patch_size)
    wide = c.stem == "conv_wide"
    layers: list[nn.Module] = []
    channels, stages = 3, c.patch_size.bit_length() - 1
    for i in range(stages):
        last = i == stages - 1
        if wide and last and stages > 1:
            layers += [nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1), nn.GELU()]
        out = c.width if last else min((64 if wide else 32) * 2**i, c.width)
        layers += [nn.Conv2d(channels, out, kernel_size=3, stride=2, padding=1)]
        if not last:
            layers += [nn.GELU()]
        channels = out
    return nn.Sequential(*layers)


def sincos_2d(grid: int, width: int) -> Tensor:
    """[grid², width] at RMS 1: sines and cosines of each token's column (first half of the
    features) and row (second half) at geometric frequencies, row-major over the grid (MAE's
    embedding, with base 100 so that the lowest frequencies are near-linear across the grid)."""
    quarter = width // 4
    freqs = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    steps = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")

    def embed(coord: Tensor) -> Tensor:  # [grid²] -> [grid², 2 * quarter]
        angles = coord.flatten()[:, None] * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    out = torch.zeros(grid * grid, width)
    out[:, : 4 * quarter] = torch.cat([embed(cols), embed(rows)], dim=1) * 2**0.5
    return out


class TinyVLM(Backbone):
    """Patch embedding + decoder-only transformer with a tied LM head (a few million parameters)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.num_layers, self.num_kv_heads, self.head_dim = c.depth, c.num_kv_heads, c.head_dim
        self.vocab_size, self.rope_theta = c.vocab_size, c.rope_theta
        self.image_grid = c.image_size // c.patch_size
        self.patch_embed = image_stem(c)
        self.image_norm = None
        if c.image_token_rms is not None:
            self.image_norm = RMSNorm(c.width)
            nn.init.constant_(self.image_norm.weight, c.image_token_rms)
        self.register_buffer("image_mean", torch.tensor(c.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(c.image_std).view(1, 3, 1, 1), persistent=False)
        grid = c.image_size // c.patch_size
        sincos = c.image_pos_init == "sincos"
        start = sincos_2d(grid, c.width) if sincos else torch.randn(grid * grid, c.width)
        self.image_pos = nn.Parameter(start * 0.02)
        self.token_embed = nn.Embedding(c.vocab_size, c.width)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.depth))
        if c.init_std is not None:
            residual_std = c.init_std / math.sqrt(2 * c.depth)
            for layer in self.layers:
                for name, module in layer.named_modules():
                    if isinstance(module, nn.Linear):
                        std = residual_std if name in ("attn.out", "mlp.down") else c.init_std
                        nn.init.normal_(module.weight, std=std)
        self.final_norm = RMSNorm(c.width)
        # naming attention (kivla.model.naming); None when BackboneConfig.naming_labels is 0
        self.naming = NamingAttention(c) if c.naming_labels else None

    def stem_tokens(self, images: Tensor) -> Tensor:
        """images [B, 3, S, S] in [0, 1] -> the stem's output [B, n, W], row-major over the grid."""
        pixels = (images - self.image_mean) / self.image_std
        return rearrange(self.patch_embed(pixels), "b w h v -> b (h v) w")

    def embed_prefix(self, images: Tensor, image_mask: Tensor, prefix_ids: Tensor, prefix_mask: Tensor,
                     stem: Tensor | None = None):  # fmt: skip
        """-> (embeddings [B, Np, W], valid [B, Np]) with Np = image tokens + Lp; `stem`: the
        stem's output for `images` when already computed."""
        patches = self.stem_tokens(images) if stem is None else stem
        if self.image_norm is not None:
            patches = self.image_norm(patches)
        patches = patches + self.image_pos
        tokens = self.token_embed(prefix_ids)
        image_valid = image_mask[:, None].expand(-1, patches.shape[1])
        return torch.cat([patches, tokens], dim=1), torch.cat([image_valid, prefix_mask], dim=1)

    def forward(self, images, image_mask, prefix_ids, prefix_mask, suffix_ids=None, suffix_mask=None,
                image_hidden_layers: tuple[int, ...] = (),
                text_attention_layers: tuple[int, ...] = ()):  # fmt: skip
        """`image_hidden_layers`: also return the image tokens after these many layers (0: embeddings;
        at most depth - 1: the last layer computes suffix outputs only). `text_attention_layers`:
        also return the attention probabilities of the text queries in these layers (0-based; the
        last layer has suffix queries only)."""
        stem = self.stem_tokens(images)
        x, prefix_valid = self.embed_prefix(images, image_mask, prefix_ids, prefix_mask, stem)
        num_image = self.config.num_image_tokens
        image_hidden = {0: x[:, :num_image]} if 0 in image_hidden_layers else {}
        num_prefix = x.shape[1]
        positions = prefix_positions(prefix_valid)
        if suffix_ids is not None and suffix_ids.shape[1] > 0:
            x = torch.cat([x, self.token_embed(suffix_ids)], dim=1)
            positions = torch.cat([positions, following_positions(prefix_valid, suffix_mask)], dim=1)
        else:
            suffix_mask = prefix_valid[:, :0]
        mask = additive_mask(backbone_attention_mask(prefix_valid, suffix_mask), x.dtype)
        object_logits = looks = naming_bias = near = None
        if self.naming is not None:
            ids = prefix_ids if x.shape[1] == num_prefix else torch.cat([prefix_ids, suffix_ids], dim=1)
            object_logits = self.naming.object_logits(stem)
            looks = self.naming.looks(object_logits, ids, prefix_mask, image_mask)
            naming_bias = looks[0]
            if self.naming.where_embed is not None:  # BackboneConfig.naming_where
                image, text, near = self.naming.where(object_logits, looks, ids, prefix_mask, image_mask)
                image = x[:, :num_image] if image is None else x[:, :num_image] + image.to(x.dtype)
                x = torch.cat([image, x[:, num_image:] + text.to(x.dtype)], 1)
                if self.naming.near_words is not None:  # BackboneConfig.naming_nearest
                    looks = self.naming.look_nearest(object_logits, looks, ids, prefix_mask)
        rope = rope_tables(positions, self.head_dim, self.rope_theta, x.dtype)
        keys, values, attention = [], [], {}
        for i, layer in enumerate(self.layers):
            # After the last layer nothing reads the prefix tokens' outputs (the expert and the
            # suffix read their K/V), so that layer computes outputs for the suffix only.
            last = i == len(self.layers) - 1
            queries_from = num_prefix if last else 0
            probs_from = num_image if i in text_attention_layers else None
            layer_mask = mask if looks is None else self.naming.mask(mask, looks, i, near)
            x, k, v, probs = layer(x, rope, layer_mask, queries_from, probs_from)
            if probs is not None:
                attention[i] = probs
            keys.append(k[:, :, :num_prefix])
            values.append(v[:, :, :num_prefix])
            if i + 1 in image_hidden_layers and not last:
                image_hidden[i + 1] = x[:, :num_image]
        suffix_hidden = self.final_norm(x) if x.shape[1] > 0 else None  # x: the suffix only now
        return BackboneOutput(PrefixCache(keys, values, prefix_valid), suffix_hidden, image_hidden, attention,
                              object_logits, naming_bias)  # fmt: skip

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return hidden @ self.token_embed.weight.T  # tied head, as in PaliGemma

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        embeddings = [self.token_embed.weight]
        body = [p for n, p in self.named_parameters() if not n.startswith("token_embed")]
        return {"backbone": body, "embeddings": embeddings}
