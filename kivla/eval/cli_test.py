import json

import pytest

from kivla.cli import main
from kivla.model.testing import save_tiny_world_bundle


def test_eval_oracle_json(tmp_path, capsys):
    assert (
        main(["eval", "--oracle", "--episodes", "4", "--split", "ood", "--out", str(tmp_path), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["ood"]["success_rate"] == 1.0 and "train" not in report["summary"]
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "report.md").is_file()
    assert list((tmp_path / "videos").glob("*.gif"))


def test_eval_policy_with_reference(tmp_path, capsys):
    policy = save_tiny_world_bundle(tmp_path / "run" / "checkpoints" / "step_00000004", recipe="ki")
    reference = save_tiny_world_bundle(tmp_path / "ref", recipe="ki", seed=1)
    argv = [
        "eval",
        "--policy",
        str(tmp_path / "run"),
        "--reference",
        str(reference),
        "--episodes",
        "4",
        "--split",
        "train",
        "--max-steps",
        "20",
        "--videos",
        "0",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "## Language" in text and "| VQA accuracy |" in text
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(saved["language"]) >= {"policy", "reference", "retention"}
    assert saved["policy"] == str(policy)  # the run directory resolved to its latest checkpoint


def test_user_errors_are_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                "--random",
                "--reference",
                str(tmp_path),
                "--out",
                str(tmp_path),
                "--episodes",
                "1",
                "--max-steps",
                "2",
            ]
        )
        == 2
    )
    assert "need --policy" in capsys.readouterr().err
    assert main(["eval", "--policy", str(tmp_path / "missing")]) == 2
    plain = save_tiny_world_bundle(tmp_path / "plain", recipe="ki")  # no keypoints
    assert main(["eval", "--policy", str(plain), "--keypoint-peak", "1", "--out", str(tmp_path)]) == 2
    assert "keypoint_peak: the policy has no keypoints" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "nope"])
