import dataclasses

import pytest

from kivla.model.config import BackboneConfig, ExpertConfig, KIPolicyConfig
from kivla.model.presets import RECIPES, recipe_config, tiny_test_config


def test_recipes_set_the_routing_fields():
    ki, naive = recipe_config("ki"), recipe_config("naive")
    assert ki.insulate and ki.discrete_target == "fast" and ki.fast_weight == 1.0 and ki.uses_discrete_loss
    assert not naive.insulate and naive.discrete_target == "none" and not naive.uses_discrete_loss
    assert recipe_config("stopgrad").insulate and not recipe_config("stopgrad").uses_discrete_loss
    joint = recipe_config("joint_fast")
    assert not joint.insulate and joint.uses_discrete_loss
    frozen = recipe_config("frozen")
    assert frozen.freeze_backbone and frozen.lm_weight == 0.0
    robot = {r.name for r in RECIPES if r.trains_actions}
    assert robot == {"naive", "stopgrad", "joint_fast", "ki", "frozen"}
    assert "pretrain" in RECIPES and not recipe_config("pretrain").uses_discrete_loss
    # A recipe keeps the architecture of its base.
    base = tiny_test_config()
    assert recipe_config("naive", base).backbone == base.backbone
    assert recipe_config("ki", flow_weight=10.0).flow_weight == 10.0


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: recipe_config("fancy"), "recipe"),
        (lambda: KIPolicyConfig(discrete_target="bpe"), "discrete_target"),
        (lambda: KIPolicyConfig(fast_weight=-1.0), "fast_weight"),
        (lambda: KIPolicyConfig(flow_weight=float("nan")), "flow_weight"),
        (lambda: KIPolicyConfig(flow_samples_per_example=0), "flow_samples_per_example"),
        (lambda: KIPolicyConfig(state_input="image"), "state_input"),
        (lambda: KIPolicyConfig(expert=ExpertConfig(num_heads=3)), "num_heads"),
        (lambda: BackboneConfig(num_heads=4, num_kv_heads=3), "num_kv_heads"),
        (lambda: BackboneConfig(image_size=60, patch_size=8), "patch_size"),
        (lambda: BackboneConfig(width=0), "width"),
        (lambda: ExpertConfig(horizon=0), "horizon"),
    ],
)
def test_invalid_configs_name_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_dict_round_trip():
    config = recipe_config("ki", tiny_test_config(), flow_samples_per_example=3)
    assert KIPolicyConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown fields"):
        KIPolicyConfig.from_dict({**config.to_dict(), "insulation": True})
    assert dataclasses.asdict(config)["backbone"]["width"] == 32
