"""End-to-end training on a small generated world dataset: every recipe, resume, bundles."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from kivla.data.world_dataset import generate_dataset
from kivla.data.world_env import VectorEnv, WorldConfig
from kivla.model.bundle import PolicyBundle
from kivla.model.presets import RECIPES
from kivla.train.config import TrainConfig
from kivla.train.run import PretrainConfig, RunConfig, build_policy, pretrain_backbone, train_policy

IMAGE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "data"
    return generate_dataset(root, episodes=6, image_size=IMAGE, seed=3, progress=False)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "pre"
    return pretrain_backbone(
        PretrainConfig(out=out, steps=3, batch_size=4, size="test", image_size=IMAGE), progress=False
    )


def run_config(dataset, out, **kw):
    train = TrainConfig(steps=4, batch_size=4, warmup_steps=1, log_every=1, save_every=2, keep_last=5)
    base = dict(data=dataset, out=out, size="test", horizon=8, tokenizer_fit_chunks=200, train=train)
    return RunConfig(**{**base, **kw})


@pytest.mark.parametrize("recipe", sorted(r.name for r in RECIPES if r.trains_actions))
def test_every_recipe_trains_and_acts(recipe, dataset, pretrained, tmp_path):
    out = train_policy(run_config(dataset, tmp_path / recipe, recipe=recipe, init=pretrained), progress=False)
    assert [c.name for c in out.checkpoints] == ["step_00000002", "step_00000004"]
    assert len(out.history) == 4 and all(np.isfinite(r["loss"]) for r in out.history)
    bundle = PolicyBundle.load(out.checkpoints[-1])
    assert bundle.recipe == recipe
    assert (bundle.builder.action_tokenizer is not None) == (RECIPES[recipe].fast_weight > 0)
    env = VectorEnv(WorldConfig(image_size=IMAGE), 2)
    obs, _ = env.reset([0, 1])
    actions = bundle.act(obs)
    assert actions.shape == (2, 8, 4) and np.isfinite(actions).all()


def test_pretrained_backbone_is_the_starting_point(dataset, pretrained, tmp_path):
    config = run_config(
        dataset, tmp_path / "r", init=pretrained, train=TrainConfig(steps=1, batch_size=2, lr=1e-9)
    )
    out = train_policy(config, progress=False)
    start = PolicyBundle.load(pretrained, weights="model").policy.backbone.state_dict()
    after = PolicyBundle.load(out.checkpoints[-1], weights="model").policy.backbone.state_dict()
    assert max((start[k].float() - after[k].float()).abs().max().item() for k in start) < 1e-5
    # the world's language pretraining asks "nearest" by naming_nearest, and the policy keeps it
    bundle = PolicyBundle.load(out.checkpoints[-1])
    near = bundle.policy.backbone.naming.near_words
    assert near.nonzero().flatten().tolist() == [bundle.builder.text.token_id("nearest")]


def test_resume_is_bit_identical(dataset, tmp_path):
    train = TrainConfig(steps=4, batch_size=4, warmup_steps=1, log_every=1, save_every=2, grad_accum=2)
    train_policy(run_config(dataset, tmp_path / "full", train=train), progress=False)
    split = run_config(dataset, tmp_path / "split", train=dataclasses.replace(train, stop_at=2))
    train_policy(split, progress=False)
    resumed = train_policy(run_config(dataset, tmp_path / "split", train=train), progress=False, resume=True)
    assert resumed.checkpoints[-1].name == "step_00000004"
    full = PolicyBundle.load(tmp_path / "full" / "checkpoints" / "step_00000004", weights="model")
    again = PolicyBundle.load(resumed.checkpoints[-1], weights="model")
    for (name, a), b in zip(
        full.policy.state_dict().items(), again.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_run_config_errors_name_the_field(dataset):
    with pytest.raises(ValueError, match=r"RunConfig\.size"):
        RunConfig(data=dataset, size="huge")
    with pytest.raises(ValueError, match=r"RunConfig\.data"):
        RunConfig(data=None)


def test_suffix_fits_the_longest_action_encoding(dataset, tmp_path):
    # Binning gives H·D tokens (80 here), more than the default suffix room.
    config = run_config(dataset, tmp_path / "bin", recipe="ki", discrete_target="binning", horizon=20)
    bundle, batches = build_policy(config)
    assert bundle.builder.max_suffix_len >= 20 * 4 + 2
    batches(0, 0, 0, 1, 8)
    assert bundle.builder.truncated == 0


def test_dense_vision_losses_train_on_annotated_robot_frames(dataset, pretrained, tmp_path):
    # Robot frames only: the naming and referring losses come from the world's annotations alone.
    from kivla.train.mixture import MixtureConfig
    from kivla.train.run import WORLD_VISION_LOSSES

    config = run_config(dataset, tmp_path / "dense", init=pretrained, policy_overrides=WORLD_VISION_LOSSES,
                        mixture=MixtureConfig(robot=1.0, caption=0, vqa=0, text=0))  # fmt: skip
    out = train_policy(config, progress=False)
    assert all(r["loss/vision"] > 0 and r["loss/refer"] > 0 and r["loss/lm"] == 0 for r in out.history)


def test_naming_keypoints_perception_trains_and_acts(dataset, pretrained, tmp_path):
    config = run_config(dataset, tmp_path / "kp", init=pretrained, perception="naming_keypoints")
    out = train_policy(config, progress=False)
    assert all(r["loss/keypoint"] > 0 and r["loss/vision"] > 0 for r in out.history)
    bundle = PolicyBundle.load(out.checkpoints[-1])
    expert = bundle.policy.config.expert
    assert expert.keypoint_naming and expert.keypoints == 16 and bundle.policy.config.state_input == "token"
    env = VectorEnv(WorldConfig(image_size=IMAGE), 2)
    obs, _ = env.reset([0, 1])
    assert np.isfinite(bundle.act(obs)).all()


def test_goal_point_perception_trains_its_goal_and_acts(dataset, pretrained, tmp_path):
    """The demo's perception: two keypoints and the goal point, joined to the state's token; the
    world's dataset carries the goals it is supervised on."""
    config = run_config(dataset, tmp_path / "goal", init=pretrained, perception="goal_point")
    out = train_policy(config, progress=False)
    assert all(r["loss/keypoint"] > 0 for r in out.history)
    policy = PolicyBundle.load(out.checkpoints[-1]).policy
    expert = policy.config.expert
    assert expert.goal_point and expert.keypoints == 2 and expert.keypoint_input == "state"
    # Offsets and goal read the first layer; every object's offset is supervised (eighteenth round).
    assert expert.keypoint_offset_layer == 0 and expert.goal_layer == 0
    assert policy.config.keypoint_offset_weight == 1.0 and policy.expert.offset_layer == 0
    assert policy.expert.state_in.in_features == policy.config.expert.state_dim + 2 * 3
    bundle = PolicyBundle.load(out.checkpoints[-1])
    env = VectorEnv(WorldConfig(image_size=IMAGE), 2)
    obs, _ = env.reset([0, 1])
    assert np.isfinite(bundle.act(obs)).all()


def test_backbone_every_trains_the_backbone_on_its_steps_only(dataset, pretrained, tmp_path):
    """`backbone_every=2`: steps 0 and 2 draw the mixture and train everything; steps 1 and 3 draw
    robot examples only and leave the backbone's weights exactly as they were."""
    train = TrainConfig(steps=4, batch_size=4, warmup_steps=1, log_every=1, save_every=1, keep_last=5,
                        ema_decay=None)  # fmt: skip
    config = run_config(dataset, tmp_path / "every", init=pretrained, perception="goal_point",
                        backbone_every=2, train=train)  # fmt: skip
    _, batches = build_policy(config)
    mixed, expert = batches(0, 0, 0, 1, 8), batches(1, 0, 0, 1, 8)
    assert not mixed.expert_only and expert.expert_only and expert.loss_mask["flow"].all()
    assert expert.loss_denominator["flow"] == 8 and expert.loss_denominator["lm"] == 0
    out = train_policy(config, progress=False)
    assert ["loss/fast" in r for r in out.history] == [True, False, True, False]
    assert all(r["loss/flow"] > 0 and r["loss/keypoint"] > 0 for r in out.history)
    weights = [PolicyBundle.load(c, weights="model").policy.state_dict() for c in out.checkpoints]

    def moved(a: int, b: int, prefix: str) -> bool:
        return any(not torch.equal(weights[a][k], weights[b][k]) for k in weights[a] if k.startswith(prefix))

    assert not moved(0, 1, "backbone.") and moved(1, 2, "backbone.")  # checkpoints after steps 1..4
    assert moved(0, 1, "expert.") and moved(1, 2, "expert.")
    with pytest.raises(ValueError, match=r"RunConfig\.backbone_every"):
        run_config(dataset, tmp_path / "bad", backbone_every=0)
    with pytest.raises(ValueError, match=r"RunConfig\.backbone_every: .* ddp only"):
        run_config(dataset, tmp_path / "bad", backbone_every=2, train=TrainConfig(strategy="fsdp"))


def test_pretraining_can_start_with_the_stem_trained_alone(tmp_path):
    """`stem_steps`: the image stem learns the world's object labels first; its result is in run.json
    and the checkpoint starts language pretraining from that stem."""
    config = PretrainConfig(out=tmp_path / "pre", steps=2, batch_size=4, size="test", image_size=IMAGE,
                            stem_steps=5)  # fmt: skip
    checkpoint = pretrain_backbone(config, progress=False)
    record = json.loads((tmp_path / "pre" / "run.json").read_text())["pretrain"]
    assert record["stem_steps"] == 5 and 0 <= record["stem_result"]["object_accuracy"] <= 1
    assert PolicyBundle.load(checkpoint).policy.config.backbone.kind == "tiny"
    with pytest.raises(ValueError, match=r"PretrainConfig\.stem_steps"):
        PretrainConfig(stem_steps=-1)
    with pytest.raises(ValueError, match=r"PretrainConfig\.stem_steps"):
        PretrainConfig(stem_steps=10, backbone="smollm2")
