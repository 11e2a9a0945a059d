"""Naming attention: which text tokens look, at what, in which heads; what trains the object head."""

import dataclasses

import numpy as np
import pytest
import torch

from kivla.model.backbone import TinyVLM
from kivla.model.config import BackboneConfig
from kivla.model.conftest import robot_example
from kivla.model.naming import NamingAttention
from kivla.model.policy import KIPolicy
from kivla.model.presets import recipe_config

# classes: 0 nothing, 1 red circle, 2 blue circle, 3 red square; words: ids 1 red, 2 blue, 3 circle, 4 square
WORDS = {"what": 0, "red": 1, "blue": 2, "circle": 3, "square": 4, "?": 5, "the": 6}
CLASS_WORDS = [[], [1, 3], [2, 3], [1, 4]]


def _config(**flags) -> BackboneConfig:
    """A test-sized config with naming attention (4 label classes) and `flags`."""
    return BackboneConfig(vocab_size=8, width=16, depth=2, num_heads=2, num_kv_heads=1, head_dim=8,
                          mlp_hidden=32, image_size=16, patch_size=8, naming_labels=4, **flags)  # fmt: skip


def _naming(heads: int = 1) -> NamingAttention:
    config = _config(naming_heads=heads)
    naming = NamingAttention(config)
    naming.set_class_words(CLASS_WORDS)
    return naming


def _sure(classes: list[int]) -> torch.Tensor:
    """Object logits [1, n, 4] that name image token i as classes[i] with certainty."""
    return torch.nn.functional.one_hot(torch.tensor([classes]), 4).float() * 30.0


def _looks(naming, prompt: list[str], suffix: list[str] = (), classes=(1, 2, 3, 0), image=True):
    ids = torch.tensor([[WORDS[w] for w in [*prompt, *suffix]]])
    mask = torch.ones(1, len(prompt), dtype=torch.bool)
    bias, looks = naming.looks(_sure(list(classes)), ids, mask, torch.tensor([image]))
    return (bias[0] > -1).tolist(), looks[0].tolist(), bias


def test_a_name_looks_at_the_objects_it_names():
    on, looks, bias = _looks(_naming(), ["what", "red", "circle", "?", "the"])
    assert looks == [False, True, True, False, False]
    assert on[1] == [True, False, True, False]  # "red": the red circle and the red square
    assert on[2] == [True, False, False, False]  # "red circle": the red circle only
    assert all(bias[0, i].abs().sum() == 0 for i in (0, 3, 4))
    on, _, _ = _looks(_naming(), ["the", "circle", "?"])
    assert on[1] == [True, True, False, False]  # "circle": every circle
    _, looks, _ = _looks(_naming(), ["what", "red", "circle"], image=False)
    assert not any(looks)  # no image: nothing to look at


def test_the_answer_looks_at_the_objects_the_prompt_names():
    # "red circle ... blue": the names end at "circle" and "blue"; "red" alone is not a name
    on, looks, _ = _looks(_naming(), ["red", "circle", "the", "blue", "?"], ["what", "square", "the"],
                          classes=(1, 2, 3, 0))  # fmt: skip
    assert looks == [True, True, False, True, False, True, True, True]
    assert on[5] == [True, True, False, False]  # the answer: the red circle and the blue circle
    assert on[7] == on[5]
    assert on[6] == [False, False, True, False]  # an answer word that names: its own classes
    _, looks, _ = _looks(_naming(), ["what", "?"], ["the"])
    assert looks == [False, False, False]  # a prompt that names nothing: the answer does not look


def test_looking_tokens_attend_to_the_image_only_in_the_naming_heads():
    naming = _naming(heads=1)
    n, lq = naming.num_image_tokens, 3
    ids = torch.tensor([[WORDS["what"], WORDS["circle"], WORDS["the"]]])
    looks = naming.looks(_sure([1, 0, 0, 2]), ids, torch.ones(1, 3, dtype=torch.bool), torch.tensor([True]))
    mask = naming.mask(torch.zeros(1, 1, n + lq, n + lq), looks, layer=0)
    assert mask.shape == (1, 2, n + lq, n + lq)
    circle = n + 1
    assert torch.isinf(mask[0, 0, circle, n:]).all() and mask[0, 0, circle, [0, 3]].max() > -1e-3
    assert mask[0, 0, circle, [1, 2]].max() < -5  # tokens that name no circle
    assert mask[0, 1].abs().sum() == 0 and mask[0, 0, n].abs().sum() == 0  # other head, "what"


def test_class_words_are_checked():
    with pytest.raises(ValueError, match="expected 4 classes"):
        _naming().set_class_words([[1]])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        _naming().set_class_words([[], [9], [], []])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        _naming().set_class_words([[], [None], [], []])  # a word the vocabulary does not have
    with pytest.raises(ValueError, match=r"BackboneConfig\.naming_labels"):
        BackboneConfig(naming_labels=1)
    with pytest.raises(ValueError, match=r"BackboneConfig\.naming_heads"):
        BackboneConfig(naming_labels=4, naming_heads=5)
    with pytest.raises(ValueError, match=r"BackboneConfig\.naming_labels"):
        BackboneConfig(kind="causal_lm", path="x", naming_labels=4)


def test_the_backbone_reads_the_named_object_through_a_naming_head(monkeypatch):
    torch.manual_seed(0)
    config = BackboneConfig(vocab_size=8, width=32, depth=2, num_heads=2, num_kv_heads=1, head_dim=16,
                            mlp_hidden=64, image_size=16, patch_size=8, naming_labels=4)  # fmt: skip
    backbone = TinyVLM(config)
    backbone.naming.set_class_words(CLASS_WORDS)
    sure = _sure([0, 3, 0, 1]).expand(2, -1, -1)
    monkeypatch.setattr(backbone.naming, "object_logits", lambda stem: sure)
    ids = torch.tensor([[WORDS[w] for w in ("what", "red", "circle")]] * 2)
    valid = torch.ones(2, 3, dtype=torch.bool)
    images, image_mask = torch.rand(2, 3, 16, 16), torch.tensor([True, True])
    out = backbone(images, image_mask, ids, valid, text_attention_layers=(0,))
    probs = out.text_attention[0]  # [B, heads, 3, 4 + 3]
    assert probs[:, 0, 2, 3].min() > 0.99  # "red circle" in head 0: the red circle's token
    assert probs[:, 1, 2, :4].sum(-1).max() < 0.99  # head 1 also attends to text
    assert out.object_logits.shape == (2, 4, 4)


def test_a_looking_token_carries_where_it_looks():
    config = _config(naming_where=True)
    naming = NamingAttention(config)
    naming.set_class_words(CLASS_WORDS)
    with torch.no_grad():
        naming.where_embed.weight.copy_(torch.eye(16)[:, :2])  # features 0 / 1 = column / row
        naming.where_slots.weight.copy_(torch.eye(16)[:, 2:6])  # features 2-5: the two names' (col, row)
    # the 2x2 grid, row-major: red circle at (col 1, row 0), blue circle at (col 0, row 1)
    ids = torch.tensor([[WORDS[w] for w in ("red", "circle", "the", "blue", "circle", "?", "the")]])
    prompt = torch.ones(1, 6, dtype=torch.bool)
    looks = naming.looks(_sure([0, 1, 2, 0]), ids, prompt, torch.tensor([True]))
    image, where, near = naming.where(_sure([0, 1, 2, 0]), looks, ids, prompt, torch.tensor([True]))
    where = where[0]
    assert image is None and near is None
    assert torch.allclose(where[1, :2], torch.tensor([1.0, -1.0]), atol=1e-3)  # "red circle": top right
    assert torch.allclose(where[4, :2], torch.tensor([-1.0, 1.0]), atol=1e-3)  # "blue circle": bottom left
    # the answer: both names' positions, in order
    assert torch.allclose(where[6, :6], torch.tensor([0, 0, 1.0, -1.0, -1.0, 1.0]), atol=1e-3)
    assert where[[2, 5]].abs().sum() == 0  # tokens that do not look
    assert where[[1, 4], 2:].abs().sum() == 0 and where[6, :2].abs().sum() == 0
    with pytest.raises(ValueError, match=r"BackboneConfig\.naming_where"):
        BackboneConfig(naming_where=True)


def test_where_counts_the_named_objects_and_offsets_the_image_from_the_first_name():
    config = _config(naming_where=True, naming_count=True, naming_relative=True)
    naming = NamingAttention(config)
    naming.set_class_words(CLASS_WORDS)
    with torch.no_grad():
        naming.where_embed.weight.zero_()
        naming.where_embed.weight[2:8, 2:8].copy_(torch.eye(6))  # features 2-7: the count's bins
        naming.where_slots.weight.zero_()
        naming.where_slots.weight[2:8, 2:8].copy_(torch.eye(6))  # the first name's count bins
        naming.where_scene.weight.zero_()
        naming.where_scene.weight[8:14].copy_(torch.eye(6))
        naming.where_relative.weight.copy_(torch.eye(16)[:, :3])
    # two circles (tokens 1 and 2) and a red square (token 3): "circle ?" then the answer
    logits = _sure([0, 1, 2, 3])
    ids = torch.tensor([[WORDS["circle"], WORDS["?"], WORDS["the"]]])
    prompt = torch.ones(1, 2, dtype=torch.bool)
    looks = naming.looks(logits, ids, prompt, torch.tensor([True]))
    image, text, _ = naming.where(logits, looks, ids, prompt, torch.tensor([True]))
    two, three = torch.eye(6)[2], torch.eye(6)[3]
    torch.testing.assert_close(text[0, 0, 2:8], two, atol=1e-3, rtol=0)  # "circle": two of them
    torch.testing.assert_close(text[0, 2, 2:8], two, atol=1e-3, rtol=0)  # the answer's first slot too
    torch.testing.assert_close(text[0, 2, 8:14], three, atol=1e-3, rtol=0)  # suffix: 3 objects
    assert text[0, :2, 8:14].abs().sum() == 0
    # image tokens: offset from the circles' mean position (0, 0), and its squared length
    torch.testing.assert_close(image[0, :, :2], naming.grid_xy)
    torch.testing.assert_close(image[0, :, 2], naming.grid_xy.square().sum(-1))
    with pytest.raises(ValueError, match=r"BackboneConfig\.naming_count"):
        BackboneConfig(naming_labels=4, naming_count=True)


def test_near_scores_the_objects_the_prompt_does_not_name_by_their_distance_from_the_first_name():
    config = _config(naming_where=True, naming_near=True)
    naming = NamingAttention(config)
    naming.set_class_words(CLASS_WORDS)
    # the 2x2 grid: the blue circle (token 0, named), a red circle (token 1), a red square (token 3)
    logits = _sure([2, 1, 0, 3])
    ids = torch.tensor([[WORDS[w] for w in ("blue", "circle", "?", "the")]])
    prompt = torch.ones(1, 3, dtype=torch.bool)
    looks = naming.looks(logits, ids, prompt, torch.tensor([True]))
    _, _, near = naming.where(logits, looks, ids, prompt, torch.tensor([True]))
    other, far = near[0, 3, :, 0], near[0, 3, :, 1]  # the answer token
    torch.testing.assert_close(other, torch.tensor([0.0, 1.0, 0.0, 1.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(far, torch.tensor([0.0, 4.0, 0.0, 8.0]), atol=1e-2, rtol=0)  # from (-1, -1)
    assert near[0, :3].abs().sum() == 0  # the prompt's tokens
    with torch.no_grad():
        naming.near[1] = torch.tensor([0.0, -1.0])
    n = naming.num_image_tokens
    masks = [naming.mask(torch.zeros(1, 1, n + 4, n + 4), looks, layer, near) for layer in (0, 1)]
    assert masks[0][0, 1].abs().sum() == 0  # weights start at 0
    torch.testing.assert_close(masks[1][0, 1, n + 3, :n], -far, atol=1e-2, rtol=0)  # head naming_heads
    with pytest.raises(ValueError, match=r"BackboneConfig\.naming_near"):
        dataclasses.replace(config, naming_heads=2)


def test_nearest_makes_the_answer_look_at_the_unnamed_object_nearest_the_first_name():
    config = _config(naming_where=True, naming_nearest=True)
    naming = NamingAttention(config)
    naming.set_class_words(CLASS_WORDS)
    naming.set_near_words([7])  # "nearest"
    prompt = torch.ones(1, 3, dtype=torch.bool)
    image = torch.tensor([True])

    def answer_looks(words: list[int], classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor([words])
        logits = _sure(classes)
        looks = naming.looks(logits, ids, prompt, image)
        return naming.look_nearest(logits, looks, ids, prompt)[0][0], looks[0][0]

    # the 2x2 grid: the blue circle (named) at token 0 = (-1, -1); a red circle at token 2 = (-1, 1)
    # is nearer than the red square at token 3 = (1, 1); token 1 is the table
    nearest = [7, WORDS["blue"], WORDS["circle"], WORDS["the"]]  # "nearest blue circle" + the answer
    bias, before = answer_looks(nearest, [2, 0, 1, 3])
    assert bias[3].argmax() == 2 and bias[3, 2] > -1e-3 and (bias[3, [0, 1, 3]] < -9).all()
    assert before[3].argmax() == 0  # without it the answer looks at the named blue circle
    torch.testing.assert_close(bias[:3], before[:3])  # the prompt's words keep their looks
    assert answer_looks(nearest, [2, 3, 0, 1])[0][3].argmax() == 1  # the square nearer: its token
    plain = [WORDS["what"], WORDS["blue"], WORDS["circle"], WORDS["the"]]  # no near word: unchanged
    torch.testing.assert_close(*answer_looks(plain, [2, 0, 1, 3]))
    with pytest.raises(ValueError, match=r"BackboneConfig\.naming_nearest"):
        BackboneConfig(naming_labels=4, naming_nearest=True)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        naming.set_near_words([8])
    with pytest.raises(ValueError, match=r"naming_nearest is off"):
        _naming().set_near_words([7])


def test_the_backbone_adds_where_a_word_looks_to_its_embedding():
    torch.manual_seed(0)
    config = BackboneConfig(vocab_size=8, width=32, depth=2, num_heads=2, num_kv_heads=1, head_dim=16,
                            mlp_hidden=64, image_size=16, patch_size=8, naming_labels=4,
                            naming_where=True)  # fmt: skip
    backbone = TinyVLM(config)
    plain = TinyVLM(dataclasses.replace(config, naming_where=False))
    unexpected = plain.load_state_dict(backbone.state_dict(), strict=False).unexpected_keys
    assert unexpected == ["naming.where_embed.weight", "naming.where_slots.weight"]
    for model in (backbone, plain):
        model.naming.set_class_words(CLASS_WORDS)
        model.naming.object_logits = lambda stem: _sure([0, 0, 0, 1])
    ids = torch.tensor([[WORDS[w] for w in ("what", "red", "circle")]])
    args = (torch.rand(1, 3, 16, 16), torch.tensor([True]), ids, torch.ones(1, 3, dtype=torch.bool),
            torch.tensor([[WORDS["the"]]]), torch.ones(1, 1, dtype=torch.bool))  # fmt: skip
    moved = backbone(*args).suffix_hidden
    assert (moved - plain(*args).suffix_hidden).norm() > 1e-3 * moved.norm()
    with torch.no_grad():
        backbone.naming.where_embed.weight.zero_()
        backbone.naming.where_slots.weight.zero_()
    torch.testing.assert_close(backbone(*args).suffix_hidden, plain(*args).suffix_hidden)


def _policy(config, builder, recipe="ki"):
    torch.manual_seed(0)
    backbone = dataclasses.replace(config.backbone, naming_labels=5)
    policy = KIPolicy(recipe_config(recipe, dataclasses.replace(config, backbone=backbone), vision_labels=5,
                                    vision_weight=1.0))  # fmt: skip
    policy.set_label_words([(), ("red", "circle"), ("blue", "square"), ("red", "square"), ("green",)],
                           builder.text.token_id)  # fmt: skip
    return policy


def test_the_vision_loss_trains_the_object_head_and_the_flow_loss_does_not(builder, config):
    from kivla.model.vision_test import _labelled_example

    rng = np.random.default_rng(0)
    policy = _policy(config, builder)
    assert policy.backbone.naming.class_words.any()
    out = policy(builder.collate([robot_example(rng), _labelled_example(rng)]),
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    policy.zero_grad(set_to_none=True)
    out.parts["vision"].backward(retain_graph=True)
    assert policy.backbone.naming.object_head.weight.grad.abs().sum() > 0
    policy.zero_grad(set_to_none=True)
    out.parts["flow"].backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in policy.backbone.parameters())


def test_naming_labels_must_match_the_vision_labels(config):
    backbone = dataclasses.replace(config.backbone, naming_labels=4)
    with pytest.raises(ValueError, match=r"naming_labels: must equal KIPolicyConfig\.vision_labels"):
        recipe_config(
            "ki", dataclasses.replace(config, backbone=backbone), vision_labels=5, vision_weight=1.0
        )


def test_keypoints_scored_by_naming_read_the_object_head(builder, config, monkeypatch):
    from kivla.model.keypoints_test import with_keypoints

    torch.manual_seed(0)
    policy = _policy(with_keypoints(config, naming=True), builder)
    batch = builder.collate([robot_example(np.random.default_rng(i)) for i in (3, 4)])
    n = policy.backbone.image_grid**2
    # image tokens: red circle, nothing, red square, blue square (class 4, "green", as likely as 0)
    sure = _sure([1, 0, 3, 2]).expand(2, -1, -1)
    five = torch.cat([sure, sure[..., :1]], dim=2)  # [B, n, 5]
    monkeypatch.setattr(policy.backbone.naming, "object_logits", lambda stem: five)
    naming = policy.encode_prefix(batch).image_naming  # [B, n, Lp]
    assert naming.shape == (2, n, batch.prefix_ids.shape[1])
    words = [builder.text.token_id(w) for w in ("red", "circle")]
    row = batch.prefix_ids[0].tolist()
    circle = next(i for i in range(1, len(row)) if row[i - 1 : i + 1] == words)  # "red circle"
    assert naming[0, :, circle].argmax() == 0 and naming[0, 1:, circle].max() < -5
    the = row.index(builder.text.token_id("the"))
    assert naming[:, :, the].abs().sum() == 0  # a word that names nothing does not score
