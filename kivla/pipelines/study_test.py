import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from kivla.model.testing import save_tiny_world_bundle
from kivla.pipelines.study import StudyConfig, run_study


def fake_pretrain(config, progress=False):
    return save_tiny_world_bundle(Path(config.out) / "checkpoints" / "step_00000003", recipe="ki", seed=99)


def fake_train(config, progress=False):
    """Two untrained checkpoints of the right recipe: the study's plumbing, not its numbers."""
    target = config.discrete_target or ("binning" if config.recipe in ("naive", "ki", "joint_fast") else None)
    ckpts = [
        save_tiny_world_bundle(
            Path(config.out) / "checkpoints" / f"step_{s:08d}",
            recipe=config.recipe,
            seed=config.train.seed * 10 + s,
            discrete_target=target,
        )
        for s in (2, 4)
    ]
    history = [{"step": s, "loss": 1.0 / s, "loss/flow": 0.5 / s} for s in (1, 2, 3, 4)]
    return SimpleNamespace(run_dir=Path(config.out), checkpoints=ckpts, history=history)


def test_tiny_study_writes_report_and_plots(tmp_path):
    config = StudyConfig(
        study="ki",
        budget="test",
        seeds=2,
        work=tmp_path / "work",
        report=tmp_path / "report",
        variants=("naive", "ki"),
        progress=False,
    )
    path = run_study(config, pretrain_backbone=fake_pretrain, train_policy=fake_train)
    text = path.read_text()
    for heading in ("## Last checkpoint", "## What reproduced and what did not", "## Gradient study"):
        assert heading in text
    assert "| naive |" in text and "| ki |" in text and "KI trains faster than naive" in text
    for png in ("flow_val", "success", "vqa_retention", "follow", "gradients"):
        image = tmp_path / "report" / "ki_study" / f"{png}.png"
        assert image.is_file() and image.read_bytes()[:4] == b"\x89PNG"
        assert f"ki_study/{png}.png" in text
    results = json.loads((tmp_path / "report" / "ki_study.json").read_text())
    assert [len(results["runs"][v]) for v in ("naive", "ki")] == [2, 2]
    assert [c["step"] for c in results["runs"]["ki"][0]["checkpoints"]] == [2, 4]
    assert len(results["gradients"]["last"]["flow"]) == 5

    # Finished runs are cached: a second call trains nothing.
    def no_training(config, progress=False):
        raise AssertionError("should have been cached")

    run_study(config, pretrain_backbone=fake_pretrain, train_policy=no_training)


def test_study_config_validation():
    with pytest.raises(ValueError, match="study"):
        StudyConfig(study="nope")
    with pytest.raises(ValueError, match="variants"):
        StudyConfig(study="targets", variants=("naive",))
    with pytest.raises(ValueError, match="seeds"):
        StudyConfig(seeds=0)


@pytest.mark.slow
@pytest.mark.parametrize("study", ["ki", "targets"])
def test_real_tiny_study_every_variant(study, tmp_path):
    """A whole study with real training at the test budget (about 10-40 s on one core)."""
    config = StudyConfig(
        study=study, budget="test", seeds=1, work=tmp_path / "w", report=tmp_path / "r", progress=False
    )
    text = run_study(config).read_text()
    claim = (
        "Removing the FAST loss hurts OOD success most" if study == "ki" else "## Tokenizer rate-distortion"
    )
    assert claim in text
