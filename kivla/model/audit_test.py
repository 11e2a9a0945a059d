import json

import pytest
import torch

from kivla.cli import main
from kivla.model.audit import GROUPS, gradient_audit
from kivla.model.policy import KIPolicy
from kivla.model.presets import recipe_config, tiny_test_config
from kivla.model.synthetic import synthetic_batch


def audit(recipe: str) -> dict:
    torch.manual_seed(0)
    config = recipe_config(recipe, tiny_test_config())
    return gradient_audit(
        KIPolicy(config), synthetic_batch(config, 6, prompt_len=6, fast_len=5, num_language=2)
    )


@pytest.mark.parametrize("recipe", ["ki", "stopgrad"])
def test_insulated_recipes_put_exactly_zero_flow_gradient_on_the_backbone(recipe):
    report = audit(recipe)
    assert report["flow"]["backbone"] == 0.0 and report["flow"]["embeddings"] == 0.0
    assert report["flow"]["expert"] > 0
    assert report["lm"]["backbone"] > 0 and report["lm"]["expert"] == 0.0


def test_naive_and_joint_fast_let_the_flow_gradient_into_the_backbone():
    naive, joint = audit("naive"), audit("joint_fast")
    assert naive["flow"]["backbone"] > 0 and naive["flow"]["embeddings"] > 0
    assert naive["fast"] == {group: 0.0 for group in GROUPS}  # no discrete target in naive
    assert joint["flow"]["backbone"] > 0 and joint["fast"]["backbone"] > 0 and joint["fast"]["expert"] == 0.0


def test_frozen_backbone_gets_no_gradient_at_all():
    report = audit("frozen")
    assert all(report[loss]["backbone"] == 0.0 and report[loss]["embeddings"] == 0.0 for loss in report)


def test_cli_json_schema(capsys):
    assert main(["audit", "--recipe", "ki", "--json", "--size", "test", "--batch-size", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"flow", "fast", "lm"}
    for loss in report.values():
        assert set(loss) == set(GROUPS) and all(isinstance(v, float) for v in loss.values())
    assert report["flow"]["backbone"] == 0.0 and report["fast"]["backbone"] > 0


def test_cli_on_a_checkpoint(tmp_path, capsys):
    from kivla.model.testing import save_tiny_world_bundle

    save_tiny_world_bundle(tmp_path / "policy", recipe="naive")
    args = [
        "audit",
        "--recipe",
        "ki",
        "--json",
        "--batch-size",
        "3",
        "--checkpoint",
        str(tmp_path / "policy"),
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["flow"]["backbone"] == 0.0 and report["fast"]["backbone"] > 0
    assert main(["audit", "--recipe", "ki", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "policy.json" in capsys.readouterr().err


def test_cli_table_and_bad_arguments(capsys):
    assert main(["audit", "--recipe", "naive", "--size", "test", "--batch-size", "4"]) == 0
    assert "flow" in capsys.readouterr().out
    assert main(["audit", "--recipe", "ki", "--size", "test", "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
