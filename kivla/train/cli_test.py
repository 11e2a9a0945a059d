import argparse

import pytest

from kivla.cli import build_parser, main
from kivla.data.world_dataset import generate_dataset
from kivla.train.checkpoint import list_checkpoints
from kivla.train.cli import _parse_mix, build_run_config


def test_mix_parsing_names_the_bad_part():
    assert _parse_mix("robot=0.5,vqa=0.5") == {"robot": 0.5, "caption": 0.0, "vqa": 0.5, "text": 0.0}
    with pytest.raises(argparse.ArgumentTypeError, match="source=weight"):
        _parse_mix("robots=1")
    with pytest.raises(argparse.ArgumentTypeError, match="must be a number"):
        _parse_mix("robot=lots")


def test_train_stop_and_resume_from_the_command_line(tmp_path, capsys):
    data = generate_dataset(tmp_path / "data", episodes=3, image_size=32, seed=1, progress=False)
    out = tmp_path / "run"
    args = ["train", "--recipe", "ki", "--data", str(data), "--out", str(out), "--size", "test",
            "--steps", "4", "--batch-size", "2", "--horizon", "6", "--no-progress",
            "--save-every", "2"]  # fmt: skip
    assert main([*args, "--stop-at", "2"]) == 0
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000002"]
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert list_checkpoints(out / "checkpoints")[-1].name == "step_00000004"
    assert "to step 4 of 4" in capsys.readouterr().out


def test_train_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "--data: a LeRobot dataset directory is required" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_optimizer_flags_reach_the_run_config(tmp_path):
    flags = ["--lr", "2e-3", "--backbone-lr-scale", "0.1", "--grad-clip", "0.5"]
    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *flags])
    train = build_run_config(args).train
    assert (train.lr, train.backbone_lr_scale, train.grad_clip) == (2e-3, 0.1, 0.5)
