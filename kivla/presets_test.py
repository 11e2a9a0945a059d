import dataclasses

import pytest

from kivla.model.presets import PERCEPTIONS, RECIPES, SIZES, Recipe
from kivla.pipelines.budgets import BUDGETS, STUDIES
from kivla.pipelines.demo import DEMOS
from kivla.presets import Presets
from kivla.train.config import TrainConfig
from kivla.train.run import PretrainConfig, RunConfig

TYPOS = [(RECIPES, "kl", "ki"), (SIZES, "tin", "tiny"), (BUDGETS, "quik", "quick"), (DEMOS, "quikc", "quick"),
         (STUDIES, "target", "targets"), (PERCEPTIONS, "naming_keypoint", "naming_keypoints")]  # fmt: skip


@pytest.mark.parametrize(("presets", "typo", "nearest"), TYPOS)
def test_a_typo_names_the_nearest_preset(presets, typo, nearest):
    with pytest.raises(ValueError, match=f"did you mean '{nearest}'"):
        presets[typo]


def test_presets_are_frozen_and_named_once():
    for presets in (RECIPES, SIZES, BUDGETS, DEMOS, STUDIES, PERCEPTIONS):
        for preset in presets:
            with pytest.raises(dataclasses.FrozenInstanceError):
                preset.name = "other"
    with pytest.raises(ValueError, match="twice"):
        Presets("recipe", [RECIPES["ki"], RECIPES["ki"]])


def test_the_gradient_subject_is_chosen_by_insulation():
    ki = STUDIES["ki"].variants
    uninsulated = [v.name for v in ki if not v.recipe_preset.insulate]
    assert uninsulated == ["naive", "joint_fast"] and not ki["naive"].uses_discrete_loss


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RunConfig(size="huge", data="d"), r"RunConfig\.size"),
        (lambda: RunConfig(recipe="kii", data="d"), r"RunConfig\.recipe"),
        (lambda: RunConfig(perception="keypoints", data="d"), r"RunConfig\.perception"),
        (lambda: PretrainConfig(steps=0), r"PretrainConfig\.steps"),
        (lambda: PretrainConfig(size="big"), r"PretrainConfig\.size"),
        (lambda: PretrainConfig(lr=0.0), r"PretrainConfig\.lr"),
        (
            lambda: Recipe("x", insulate=True, discrete_target="bpe", fast_weight=1),
            r"Recipe\.discrete_target",
        ),
        (lambda: dataclasses.replace(DEMOS["quick"], train_steps=0), r"DemoConfig\.train_steps"),
        (lambda: dataclasses.replace(DEMOS["quick"], perception="keypoint"), r"DemoConfig\.perception"),
    ],
)
def test_configs_validate_on_construction(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_run_configs_are_frozen():
    for config in (RunConfig(data="d"), PretrainConfig(), TrainConfig()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.seed = 1  # type: ignore[misc]


def test_policy_overrides_win_over_the_perception_field_by_field():
    perception = PERCEPTIONS["naming_keypoints"]
    merged = perception.overrides({"keypoint_weight": 0.5, "expert": {"keypoints": 8}})
    assert merged["keypoint_weight"] == 0.5 and merged["state_input"] == "token"
    assert merged["expert"]["keypoints"] == 8 and merged["expert"]["keypoint_naming"] is True
    assert PERCEPTIONS["prefix"].overrides() == {"state_input": "prompt"}
