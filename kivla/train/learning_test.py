"""Guards of learning (docs/learning.md): a short language pretraining with the dense vision losses
must leave image tokens that know the colour of the object they own, and a short ki training must
beat the random policy on reach in closed loop."""

import pytest
import torch

from kivla.data.language import language_examples
from kivla.data.world_dataset import generate_dataset
from kivla.data.world_scene import COLOR_NAMES, NUM_LABELS, is_object_label
from kivla.eval.baselines import BundlePolicy, RandomPolicy
from kivla.eval.rollout import EvalConfig, evaluate
from kivla.model.bundle import PolicyBundle
from kivla.model.vision import object_token_labels
from kivla.train.config import TrainConfig
from kivla.train.mixture import MixtureConfig
from kivla.train.run import PretrainConfig, RunConfig, pretrain_backbone, train_policy


def test_short_pretraining_teaches_image_tokens_their_colour(tmp_path):
    config = PretrainConfig(
        out=tmp_path, steps=400, batch_size=16, lr=3e-3, size="test", image_size=32,
        mixture=MixtureConfig(robot=0.0, caption=0.0, vqa=1.0, text=0.0),
        backbone_overrides=dict(stem="conv", image_mean=(0.8, 0.76, 0.69), image_std=(0.25,) * 3),
        policy_overrides=dict(vision_weight=1.0, vision_labels=NUM_LABELS, refer_layer=1),
    )  # fmt: skip
    bundle = PolicyBundle.load(pretrain_backbone(config, progress=False))
    policy, c = bundle.policy.eval(), bundle.policy.config
    examples = list(language_examples(99, 64, kinds=("vqa",), image_size=32))
    batch = bundle.builder.collate([e.to_example() for e in examples])
    with torch.no_grad():
        out = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                              image_hidden_layers=(0,))  # fmt: skip
        pred = policy.vision_head(out.image_hidden[0])[..., 1:].argmax(-1) + 1
    owners = object_token_labels(batch.image_labels, NUM_LABELS, c.backbone.patch_size)
    objects = is_object_label(owners)
    colour = lambda label: (label - 1) // 3  # noqa: E731
    accuracy = (colour(pred[objects]) == colour(owners[objects])).float().mean()
    print(f"object colour accuracy {accuracy:.3f}")
    assert accuracy > 3 / len(COLOR_NAMES), f"object colour accuracy {accuracy:.2f} (chance 0.17)"


@pytest.mark.slow
def test_short_ki_training_beats_the_random_policy_on_reach(tmp_path):
    """~10 minutes on 2 CPU cores: the demo's recipe at a third of its budget, reach episodes only.
    Measured: ki 79.2%, random 37.5% of 24 reach episodes (AMD EPYC, bf16)."""
    data = generate_dataset(tmp_path / "data", 120, image_size=64, seed=0, video=False,
                            families=("reach",), progress=False)  # fmt: skip
    pretrain = PretrainConfig(out=tmp_path / "pretrain", steps=300, batch_size=32, lr=2e-3, size="tiny",
                              image_size=64)  # fmt: skip
    pretrained = pretrain_backbone(pretrain, progress=False)
    train = TrainConfig(steps=400, batch_size=32, lr=1e-3, warmup_steps=20, save_every=400, keep_last=1)
    run = RunConfig(recipe="ki", data=data, out=tmp_path / "ki", init=pretrained, size="tiny",
                    perception="naming_keypoints", train=train)  # fmt: skip
    bundle = PolicyBundle.load(train_policy(run, progress=False).checkpoints[-1])
    config = EvalConfig(episodes=24, splits=("train",), families=("reach",), videos=0)
    ki = evaluate(BundlePolicy(bundle, seed=0), config).summary()["train"]["success_rate"]
    random = evaluate(RandomPolicy(seed=0), config).summary()["train"]["success_rate"]
    print(f"reach success: ki {ki:.1%}, random {random:.1%}")
    assert ki >= random + 0.2, f"reach success: ki {ki:.1%}, random {random:.1%}"


def _pretrain_on_questions(tmp_path, asked: tuple[str, ...]) -> dict[str, float]:
    """The demo's pretraining recipe (stem pretraining, naming attention and its features) on the
    `asked` question types only, at half the demo's steps -> held-out accuracy per asked type."""
    from kivla.data.language import QUESTION_TYPES
    from kivla.eval.language import LanguageConfig, heldout_examples, score_examples, summarize

    others = tuple(t for t in QUESTION_TYPES if t not in asked)
    config = PretrainConfig(out=tmp_path, steps=300, batch_size=32, lr=2e-3, size="tiny", image_size=64,
                            stem_steps=1500,
                            mixture=MixtureConfig(robot=0.0, caption=0.0, vqa=1.0, text=0.0,
                                                  exclude_question_types=others))  # fmt: skip
    bundle = PolicyBundle.load(pretrain_backbone(config, progress=False))
    examples = [e for e in heldout_examples(LanguageConfig(num_vqa=300, num_caption=0, num_text=0), 64)
                if e.kind.removeprefix("vqa:") in asked]  # fmt: skip
    per_type = summarize(score_examples(bundle, examples))["vqa_per_type"]
    print({t: round(per_type[t], 2) for t in asked})
    return per_type


@pytest.mark.slow
def test_naming_attention_answers_colour_and_shape_questions_from_the_image(tmp_path):
    """~3 minutes on 2 CPU cores. Chance is ~30% per type. Measured with the thirteenth round's
    naming attention (before its where features): colour 98%, shape 95% in 2 min 42 s (Intel Xeon,
    bf16)."""
    per_type = _pretrain_on_questions(tmp_path, ("color", "shape"))
    assert per_type["color"] > 0.6 and per_type["shape"] > 0.6, per_type


@pytest.mark.slow
def test_where_answers_spatial_and_count_questions_from_the_image(tmp_path):
    """~3 minutes on 2 CPU cores; without naming attention's where, count, relative and near
    features left/right and above/below stayed at their 50% prior (docs/learning.md, seventeenth
    round). Measured: left/right 100%, relation 100%, count 90% in 3 min 2 s (Intel Xeon, bf16,
    beside another training)."""
    per_type = _pretrain_on_questions(tmp_path, ("left_right", "relation", "count"))
    assert per_type["left_right"] > 0.75 and per_type["relation"] > 0.75 and per_type["count"] > 0.6, per_type
