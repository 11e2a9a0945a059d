"""Mixture sampler: ratios, loss masks, seeding, normalized robot actions."""

from collections import Counter

import numpy as np
import pytest

from kivla.data.lerobot_read import LeRobotDataset
from kivla.data.mixture import MixtureSampler
from kivla.data.world_dataset import generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("mix") / "ds", 4, seed=1, video=False, progress=False)
    return LeRobotDataset(root, horizon=12)


RATIOS = {"robot": 0.5, "caption": 0.2, "vqa": 0.2, "text": 0.1}


def test_ratios_and_masks(dataset):
    examples = MixtureSampler(dataset, RATIOS, seed=0).sample(1500)
    counts = Counter(e.kind.split(":")[0] for e in examples)
    for source, p in RATIOS.items():
        assert abs(counts[source] / 1500 - p) < 0.04, (source, counts)
    for e in examples:
        if e.kind == "robot":
            assert e.flow and e.fast and not e.lm
            assert (
                e.actions.shape == (12, 4) and e.action_is_pad.shape == (12,) and e.image.shape == (64, 64, 3)
            )
        else:
            assert e.lm and not e.flow and not e.fast and e.answer and e.actions is None
            assert (e.image is None) == (e.kind == "text")


def test_robot_actions_are_normalized(dataset):
    examples = [e for e in MixtureSampler(dataset, {"robot": 1.0}, seed=0).sample(300)]
    actions = np.concatenate([e.actions for e in examples])
    assert actions.min() >= -1.5 and actions.max() <= 1.5
    assert actions.min() < -0.5 and actions.max() > 0.5  # spread over the range, not raw [0, 1]


def test_seeded(dataset):
    a = MixtureSampler(dataset, RATIOS, seed=3).sample(50)
    b = MixtureSampler(dataset, RATIOS, seed=3).sample(50)
    assert [(e.kind, e.prompt, e.answer) for e in a] == [(e.kind, e.prompt, e.answer) for e in b]
    c = MixtureSampler(dataset, RATIOS, seed=4).sample(50)
    assert [e.prompt for e in a] != [e.prompt for e in c]


def test_language_only_and_bad_ratios(dataset):
    examples = MixtureSampler(None, {"vqa": 1.0}, seed=0, exclude_question_types=("count",)).sample(40)
    assert all(e.kind.startswith("vqa:") and e.kind != "vqa:count" for e in examples)
    with pytest.raises(ValueError, match="robot"):
        MixtureSampler(None, {"robot": 1.0})
    with pytest.raises(ValueError, match="ratios"):
        MixtureSampler(dataset, {"robots": 1.0})
    with pytest.raises(ValueError, match="ratios"):
        MixtureSampler(dataset, {"robot": 0.0})


def test_robot_examples_carry_the_world_annotations(dataset):
    sampler = MixtureSampler(dataset, {"robot": 1.0}, seed=0)
    assert sampler.robot_has_labels
    for e in sampler.sample(20):
        (target,), destination = e.image_refs
        assert e.image_labels.shape == (64, 64) and e.image_labels.dtype == np.uint8
        assert (e.image_labels == target).any()  # the named object is in the frame's label map
        assert len(destination) == (1 if " on " in e.prompt else 0), e.prompt  # place_on names one
        assert e.image_goal.dtype == np.float32 and ((0 <= e.image_goal) & (e.image_goal <= 1)).all()


def test_examples_check_their_goal():
    from kivla.data.example import Example

    image = np.zeros((8, 8, 3), dtype=np.uint8)
    Example("reach the red circle", image=image, image_goal=np.array([0.2, 0.9], dtype=np.float32))
    for bad, image_or_none in (([0.2, 1.5], image), ([0.2, float("nan")], image), ([0.5], image),
                               ([0.5, 0.5], None)):  # fmt: skip
        with pytest.raises(ValueError, match=r"Example\.image_goal"):
            Example("reach the red circle", image=image_or_none, image_goal=np.array(bad, dtype=np.float32))


def test_robot_examples_without_annotations(tmp_path):
    root = generate_dataset(tmp_path / "ds", 1, seed=2, video=False, annotations=False, progress=False)
    sampler = MixtureSampler(LeRobotDataset(root, horizon=8), {"robot": 1.0}, seed=0)
    assert not sampler.robot_has_labels
    examples = sampler.sample(5)
    assert all(e.image_labels is None and e.image_refs is None and e.image_goal is None for e in examples)
