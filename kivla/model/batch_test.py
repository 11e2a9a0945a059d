import numpy as np
import pytest
import torch

from kivla.data.example import Example
from kivla.model.conftest import robot_example, vqa_example
from kivla.model.text import ACT, ANS, BOS, EOS
from kivla.model.vocab import VocabLayout, discretize_state


def test_collate_layout_tags_and_masks(builder):
    rng = np.random.default_rng(0)
    robot, vqa = robot_example(rng), vqa_example(rng)
    batch = builder.collate([robot, vqa])
    text, layout = builder.text, builder.layout
    assert batch.images.shape == (2, 3, 16, 16) and 0 <= batch.images.min() and batch.images.max() <= 1
    # Prefix: <bos> words, then the robot's state as 2 bins placed after the text vocabulary.
    words = text.encode(robot.prompt)
    row = batch.prefix_ids[0][batch.prefix_mask[0]].tolist()
    assert row[0] == text.token_id(BOS) and row[1 : 1 + len(words)] == words
    state_ids = row[1 + len(words) :]
    assert state_ids == (discretize_state(robot.state) + layout.state_offset).tolist()
    assert all(text.vocab_size <= i < layout.action_offset for i in state_ids)
    # Suffix of the robot example: <act> action ids (at the end of the vocab) <eos>, tagged fast.
    suffix = batch.suffix_ids[0][batch.suffix_mask[0]].tolist()
    expected = (builder.action_tokenizer.encode(robot.actions[None])[0] + layout.action_offset).tolist()
    assert suffix == [text.token_id(ACT), *expected, text.token_id(EOS)]
    assert batch.suffix_loss["fast"][0].tolist()[: len(suffix)] == [False] + [True] * (len(suffix) - 1)
    assert not batch.suffix_loss["lm"][0].any()
    # Suffix of the VQA example: <ans> answer <eos>, tagged lm, never fast.
    suffix = batch.suffix_ids[1][batch.suffix_mask[1]].tolist()
    assert suffix == [text.token_id(ANS), *text.encode("red"), text.token_id(EOS)]
    assert batch.suffix_loss["lm"][1].tolist()[: len(suffix)] == [False, True, True]
    assert not batch.suffix_loss["fast"][1].any()
    assert batch.loss_mask["flow"].tolist() == [True, False]
    assert batch.loss_mask["fast"].tolist() == [True, False]
    assert batch.loss_mask["lm"].tolist() == [False, True]
    assert batch.action_is_pad[1].all() and batch.action_is_pad[0].tolist() == [False, False, False, True]


def test_assembly_gives_a_policy_config_with_the_builder_shapes(builder):
    from kivla.model.assemble import policy_config
    from kivla.model.policy import KIPolicy

    shapes = dict(image_size=builder.image_size, vocab_size=builder.vocab_size, horizon=builder.horizon,
                  action_dim=builder.action_dim, state_dim=builder.state_dim)  # fmt: skip
    config = policy_config("tiny", "ki", **shapes, flow_weight=10.0)
    assert config.backbone.vocab_size == builder.vocab_size and config.backbone.image_size == 16
    assert (config.expert.horizon, config.expert.action_dim, config.expert.state_dim) == (4, 3, 2)
    assert config.flow_weight == 10.0 and config.backbone.width == 256  # recipe and widths untouched
    rng = np.random.default_rng(0)
    out = KIPolicy(config)(builder.collate([robot_example(rng), vqa_example(rng)]))
    assert all(torch.isfinite(v) for v in out.parts.values())


def test_vocab_layout_puts_action_ids_last():
    layout = VocabLayout(text_vocab_size=100, state_bins=256, action_vocab_size=1024)
    assert layout.vocab_size == 1380 and layout.action_offset == 356 and layout.state_offset == 100
    hf = VocabLayout(text_vocab_size=100, state_bins=0, action_vocab_size=1024, total=257_152)
    assert hf.action_offset == 257_152 - 1024
    with pytest.raises(ValueError, match=r"VocabLayout\.total"):
        VocabLayout(text_vocab_size=100, action_vocab_size=50, total=120)


def test_state_bins_cover_the_range():
    assert discretize_state(np.array([-1.0, -0.999, 0.0, 0.999, 1.0, 3.0])).tolist() == [
        0,
        0,
        128,
        255,
        255,
        255,
    ]


def test_bad_examples_name_the_problem(builder):
    rng = np.random.default_rng(0)
    wrong_dim = robot_example(rng)
    wrong_dim.actions = np.zeros((4, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=r"actions: example 0 expected shape \[4, 3\]"):
        builder.collate([wrong_dim])
    small_image = robot_example(rng)
    small_image.image = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="image: example 0"):
        builder.collate([small_image])
    nan_state = robot_example(rng)
    nan_state.state = np.array([np.nan, 0.0], dtype=np.float32)
    with pytest.raises(ValueError, match="state: example 0 contains NaN"):
        builder.collate([nan_state])
    with pytest.raises(ValueError, match="examples"):
        builder.collate([])


def test_text_only_example_has_no_image_and_long_prompts_are_cut(builder):
    text_only = Example(prompt="red " * 40, answer="blue", kind="text", lm=True)
    batch = builder.collate([text_only])
    assert not batch.image_mask[0]
    assert batch.prefix_ids.shape[1] == builder.max_prompt_len and builder.truncated == 1


def test_observation_batch(builder):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    obs = builder.observation(images, ["put the red circle", "push the blue square"], [np.zeros(2)] * 2)
    assert obs.suffix_ids.shape == (2, 0) and obs.actions is None and obs.image_mask.all()
    with pytest.raises(ValueError, match="instructions"):
        builder.observation(images, ["one"])
