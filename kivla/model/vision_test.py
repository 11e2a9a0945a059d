"""The dense vision and referring losses: targets from pixel labels, gradient routing, insulation."""

import dataclasses

import numpy as np
import pytest
import torch
from einops import rearrange

from kivla.data.example import Example
from kivla.model.conftest import robot_example, vqa_example
from kivla.model.layers import additive_mask, attend, rope_tables
from kivla.model.masks import backbone_attention_mask, following_positions, prefix_positions
from kivla.model.policy import KIPolicy
from kivla.model.presets import recipe_config
from kivla.model.vision import object_token_labels, object_tokens, referred_objects, referred_token_labels

NUM_LABELS = 5


def test_each_object_owns_the_token_of_its_centroid():
    labels = torch.zeros(1, 4, 4, dtype=torch.uint8)
    labels[0, :2, :2] = 3  # class 3 fills the top-left patch
    labels[0, 2:, 1:4] = 1  # class 1: centroid (row 3, col 2.5) -> bottom-right patch
    labels[0, 0, 3] = 4  # class 4 (say, the gripper): one pixel in the top-right patch
    owners = object_token_labels(labels, NUM_LABELS, 2)  # [1, 4 tokens]
    assert owners.tolist() == [[3, 4, 0, 1]]
    refs = torch.zeros(1, 2, 256, dtype=torch.bool)
    refs[0, 0, 1] = refs[0, 1, 3] = True  # first: class 1, second: class 3
    assert referred_token_labels(owners, refs).tolist() == [[2, 0, 0, 1]]


def test_object_tokens_give_the_centre_of_their_object():
    labels = torch.zeros(1, 4, 4, dtype=torch.uint8)
    labels[0, 2:, 1:4] = 1  # pixel centres: row 3.0, column 2.5 -> token units row 1.5, column 1.25
    labels[0, 0, 0] = 2  # one pixel: centre (0.5, 0.5) px -> token units (0.25, 0.25)
    owners, offsets = object_tokens(labels, NUM_LABELS, 2)
    assert owners.tolist() == [[2, 0, 0, 1]]
    assert torch.allclose(offsets[0, 3], torch.tensor([0.25, 0.5]))  # (column, row) - grid / 2
    assert torch.allclose(offsets[0, 0], torch.tensor([-0.75, -0.75]))
    assert offsets[0, 1:3].abs().sum() == 0  # tokens that own nothing


def test_referred_objects_give_their_tokens_and_centres():
    labels = torch.zeros(1, 4, 4, dtype=torch.uint8)
    labels[0, 2:, 1:4] = 1  # centre (column 1.25, row 1.5) token units -> (0.25, 0.5) in [-1, 1]
    labels[0, 0, 0] = 3  # centre (0.25, 0.25) -> (-0.75, -0.75)
    refs = torch.zeros(1, 2, 256, dtype=torch.bool)
    refs[0, 0, 3] = refs[0, 1, 1] = True  # first: class 3, second: class 1
    marked, centre = referred_objects(labels, refs, NUM_LABELS, 2)
    assert marked.tolist() == [[[True, False, False, False], [False, False, False, True]]]
    assert torch.allclose(centre[0], torch.tensor([[-0.75, -0.75], [0.25, 0.5]]))
    refs[0, 1] = False  # no second object: its role is empty and its centre 0
    marked, centre = referred_objects(labels, refs, NUM_LABELS, 2)
    assert not marked[0, 1].any() and centre[0, 1].abs().sum() == 0


def _labelled_example(rng, refs=((2,), ())) -> Example:
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[:8, :8], labels[8:, 8:] = 2, 4
    return Example(prompt="what color is the circle", image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                   answer="red", kind="vqa:color", lm=True, image_labels=labels, image_refs=refs)  # fmt: skip


def _policy(config, recipe="ki", **overrides):
    torch.manual_seed(0)
    config = recipe_config(recipe, config, vision_labels=NUM_LABELS, vision_weight=1.0, refer_weight=1.0,
                           refer_layer=1, **overrides)  # fmt: skip
    return KIPolicy(config)


def test_vision_losses_train_the_backbone_and_not_the_expert(builder, config):
    rng = np.random.default_rng(0)
    policy = _policy(config)
    batch = builder.collate([robot_example(rng), _labelled_example(rng)])
    assert batch.loss_mask["vision"].tolist() == [False, True] and batch.image_refs[1, 0, 2]
    out = policy(batch, generator=torch.Generator().manual_seed(0))
    for name in ("vision", "refer"):
        assert out.parts[name] > 0
        policy.zero_grad(set_to_none=True)
        out.parts[name].backward(retain_graph=True)
        stem = [p.grad for p in policy.backbone.patch_embed.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in stem), name
        assert all(p.grad is None for p in policy.expert.parameters()), name
    # The refer head reads layer 1: layers above it get no gradient from it.
    assert all(p.grad is None for p in policy.backbone.layers[1].parameters())


def test_where_loss_trains_the_image_tokens_below_its_layer(builder, config):
    rng = np.random.default_rng(4)
    policy = _policy(config, where_weight=1.0, vision_layer=1)
    out = policy(builder.collate([robot_example(rng), _labelled_example(rng)]),
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert policy.loss_names[-1] == "where" and out.parts["where"] > 0
    policy.zero_grad(set_to_none=True)
    out.parts["where"].backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in policy.backbone.patch_embed.parameters()
    )
    assert all(p.grad is None for p in policy.expert.parameters())
    assert all(p.grad is None for p in policy.backbone.layers[1].parameters())


@pytest.mark.parametrize("where", [0.0, 1.0])
def test_flow_loss_stays_insulated_with_vision_heads(builder, config, where):
    rng = np.random.default_rng(1)
    policy = _policy(config, where_weight=where)
    out = policy(builder.collate([robot_example(rng), _labelled_example(rng)]),
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    policy.zero_grad(set_to_none=True)
    out.parts["flow"].backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in policy.backbone.parameters())


def test_examples_without_labels_give_zero_vision_losses(builder, config):
    rng = np.random.default_rng(2)
    out = _policy(config)(builder.collate([robot_example(rng)]), generator=torch.Generator().manual_seed(0))
    assert out.parts["vision"] == 0 and out.parts["refer"] == 0
    assert set(out.parts) == {"flow", "fast", "lm", "vision", "refer"}


def test_a_policy_without_vision_head_reports_three_losses(builder, config):
    torch.manual_seed(0)
    policy = KIPolicy(recipe_config("ki", config))
    rng = np.random.default_rng(3)
    out = policy(builder.collate([robot_example(rng), _labelled_example(rng)]))
    assert set(out.parts) == {"flow", "fast", "lm"} and policy.vision_head is None


@pytest.mark.parametrize("stem", ["conv", "conv_wide"])
def test_conv_stem_and_image_normalization(config, stem):
    backbone = dataclasses.replace(
        config.backbone, stem=stem, image_mean=(0.8, 0.7, 0.6), image_std=(0.25,) * 3
    )
    policy = KIPolicy(dataclasses.replace(config, backbone=backbone))
    images = torch.rand(2, 3, 16, 16)
    x, _ = policy.backbone.embed_prefix(images, torch.ones(2, dtype=torch.bool), torch.ones(2, 3).long(),
                                        torch.ones(2, 3, dtype=torch.bool))  # fmt: skip
    assert x.shape[1] == config.backbone.num_image_tokens + 3


def test_conv_wide_is_the_probed_stem():
    """The library's conv_wide stem at the tiny size is the "wide" stem that
    experiments/stem_probe.py measured (same layers, same parameter count)."""
    from kivla.model.backbone import image_stem
    from kivla.model.config import BackboneConfig

    stem = image_stem(BackboneConfig(stem="conv_wide", width=256, patch_size=8))
    convs = [(m.in_channels, m.out_channels, m.stride[0]) for m in stem if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(3, 64, 2), (64, 128, 2), (128, 128, 1), (128, 256, 2)]
    assert sum(p.numel() for p in stem.parameters()) == 518_400
    assert stem(torch.rand(1, 3, 64, 64)).shape == (1, 256, 8, 8)


def test_suffix_attention_is_the_attention_the_layer_used(builder, config):
    rng = np.random.default_rng(5)
    policy = _policy(config)
    batch = builder.collate([_labelled_example(rng), vqa_example(rng)])
    backbone = policy.backbone
    x, valid = backbone.embed_prefix(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask)
    out = backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask, batch.suffix_ids,
                   batch.suffix_mask, text_attention_layers=(0,))  # fmt: skip
    probs = out.text_attention[0][:, :, batch.prefix_ids.shape[1] :]  # [B, h, Ls, Np + Ls]
    n_prefix, n_suffix = x.shape[1], batch.suffix_ids.shape[1]
    assert probs.shape == (2, config.backbone.num_heads, n_suffix, n_prefix + n_suffix)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    # Reading layer 0's values with these probabilities gives the attention output SDPA computed.
    layer = backbone.layers[0]
    full = torch.cat([x, backbone.token_embed(batch.suffix_ids)], dim=1)
    positions = torch.cat([prefix_positions(valid), following_positions(valid, batch.suffix_mask)], dim=1)
    rope = rope_tables(positions, backbone.head_dim, backbone.rope_theta, full.dtype)
    mask = additive_mask(backbone_attention_mask(valid, batch.suffix_mask), full.dtype)
    q, k, v = layer.attn(layer.attn_norm(full), rope)
    expected = attend(q[:, :, n_prefix:], k, v, mask[:, :, n_prefix:])
    values = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    torch.testing.assert_close(rearrange(probs @ values, "b h n d -> b n (h d)"), expected)


def test_ground_loss_moves_answer_attention_onto_the_referred_object(builder, config):
    rng = np.random.default_rng(6)
    policy = _policy(config, ground_weight=1.0, ground_layer=1)
    assert "ground" in policy.loss_names
    batch = builder.collate([robot_example(rng), _labelled_example(rng), vqa_example(rng)])
    assert batch.loss_mask["refer"].tolist() == [False, True, False]
    out = policy(batch, generator=torch.Generator().manual_seed(0))
    assert out.parts["ground"] > 0
    policy.zero_grad(set_to_none=True)
    out.parts["ground"].backward()
    assert all(p.grad is None for p in policy.expert.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.backbone.layers[1].parameters())
    # Descending it raises the answer's attention mass on the circle's tokens (label 2, top left).
    optimizer = torch.optim.Adam(policy.backbone.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = policy(batch, generator=torch.Generator().manual_seed(0)).parts["ground"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_ground_loss_is_zero_without_referred_objects(builder, config):
    rng = np.random.default_rng(7)
    policy = _policy(config, ground_weight=1.0, ground_layer=1)
    batch = builder.collate([robot_example(rng), vqa_example(rng)])
    out = policy(batch, generator=torch.Generator().manual_seed(0))
    assert out.parts["ground"] == 0


def test_ground_layer_is_checked(config):
    with pytest.raises(ValueError, match="ground_layer"):
        _policy(config, ground_weight=1.0, ground_layer=config.backbone.depth)


@pytest.mark.parametrize("queries", ["names", "chain"])
def test_ground_names_finds_the_end_of_each_named_object(builder, config, queries):
    rng = np.random.default_rng(8)
    policy = _policy(config, vision_readout="words", ground_weight=1.0, ground_layer=0,
                     ground_queries=queries)  # fmt: skip
    assert policy.ground_layers == ((0,) if queries == "names" else (0, 1))
    names = [(), ("green", "square"), ("red", "circle"), ("blue", "circle"), ("blue", "square")]
    policy.set_label_words(names, builder.text.token_id)
    example = dataclasses.replace(_labelled_example(rng, refs=((2,), (4,))),
                                  prompt="is the red circle left or right of the blue square?")  # fmt: skip
    batch = builder.collate([example])
    ends = policy._name_ends(batch.prefix_ids, batch.image_refs)  # [1, 2, Lp]
    words = [builder.text.token_id(w) for w in ("circle", "square")]
    for role in (0, 1):
        (position,) = ends[0, role].nonzero().flatten().tolist()
        assert batch.prefix_ids[0, position] == words[role]
    out = policy(batch, generator=torch.Generator().manual_seed(0))
    assert out.parts["ground"] > 0
    out.parts["ground"].backward()
    assert all(p.grad is None for p in policy.expert.parameters())
    # "chain" also supervises the answer's attention in the next layer: that layer's queries train
    answer_layer = policy.backbone.layers[1].attn.qkv.weight.grad
    assert (answer_layer is not None and answer_layer.abs().sum() > 0) == (queries == "chain")


def test_ground_chain_needs_a_layer_above(config):
    with pytest.raises(ValueError, match="ground_layer"):
        _policy(config, vision_readout="words", ground_weight=1.0, ground_queries="chain",
                ground_layer=config.backbone.depth - 1)  # fmt: skip
    with pytest.raises(ValueError, match="ground_queries"):
        _policy(config, ground_weight=1.0, ground_queries="chain")  # needs the words readout
