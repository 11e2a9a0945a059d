import dataclasses

import pytest
import torch

from kivla.model.backbone import TinyVLM
from kivla.model.layers import additive_mask, rope_tables
from kivla.model.masks import backbone_attention_mask, following_positions, prefix_positions
from kivla.model.presets import tiny_test_config


def test_last_layer_shortcut_equals_the_full_computation():
    torch.manual_seed(0)
    backbone = TinyVLM(tiny_test_config().backbone)
    images, image_mask = torch.rand(2, 3, 16, 16), torch.tensor([True, False])
    prefix_ids, prefix_mask = (
        torch.randint(0, 64, (2, 5)),
        torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool(),
    )
    suffix_ids, suffix_mask = torch.randint(0, 64, (2, 3)), torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()
    out = backbone(images, image_mask, prefix_ids, prefix_mask, suffix_ids, suffix_mask)

    # Reference: every layer computes every token's output.
    x, valid = backbone.embed_prefix(images, image_mask, prefix_ids, prefix_mask)
    num_prefix = x.shape[1]
    x = torch.cat([x, backbone.token_embed(suffix_ids)], dim=1)
    positions = torch.cat([prefix_positions(valid), following_positions(valid, suffix_mask)], dim=1)
    mask = additive_mask(backbone_attention_mask(valid, suffix_mask), x.dtype)
    rope = rope_tables(positions, backbone.head_dim, backbone.rope_theta, x.dtype)
    for layer, k_cached in zip(backbone.layers, out.cache.keys, strict=True):
        x, k, _, _ = layer(x, rope, mask)
        torch.testing.assert_close(k[:, :, :num_prefix], k_cached)
    torch.testing.assert_close(out.suffix_hidden, backbone.final_norm(x[:, num_prefix:]))
    assert out.cache.valid[:, :4].tolist() == [[True] * 4, [False] * 4]  # 4 image tokens, image 1 missing


def test_prefix_only_pass_has_no_suffix_hidden():
    backbone = TinyVLM(tiny_test_config().backbone)
    out = backbone(torch.rand(1, 3, 16, 16), torch.tensor([True]), torch.zeros(1, 3, dtype=torch.long),
                   torch.ones(1, 3, dtype=torch.bool))  # fmt: skip
    assert out.suffix_hidden is None and len(out.cache.keys) == 2 and out.cache.keys[0].shape == (1, 1, 7, 16)


@pytest.mark.parametrize("init_std", [0.02, None])
def test_init_keeps_image_tokens_apart_through_the_layers(init_std):
    """With PyTorch's fan-in init every layer adds an update ~7x the image tokens' scale, the same
    for every token at the start (near-uniform attention), so after one layer the tokens are alike;
    GPT-2's init (residual projections / sqrt(2 depth)) keeps them apart (docs/learning.md)."""
    from kivla.model.presets import SIZES

    torch.manual_seed(0)
    config = dataclasses.replace(SIZES["tiny"].policy_config(vocab_size=64).backbone, init_std=init_std)
    model = TinyVLM(config)
    images = torch.rand(4, 3, 64, 64)
    ids = torch.randint(0, 64, (4, 6))
    with torch.no_grad():
        out = model(images, torch.ones(4, dtype=torch.bool), ids, torch.ones(4, 6, dtype=torch.bool),
                    image_hidden_layers=(0, 3))  # fmt: skip

    def spread(h):  # std across tokens relative to the tokens' RMS
        return float(h.std(1).pow(2).mean().sqrt() / h.pow(2).mean().sqrt())

    ratio = spread(out.image_hidden[3]) / spread(out.image_hidden[0])
    assert (ratio > 0.6) if init_std is not None else (ratio < 0.3)
