"""`kivla world generate` / `kivla world show` through the real dispatcher."""

from kivla.cli import main


def test_generate_then_show(tmp_path, capsys):
    out = tmp_path / "ds"
    assert (
        main(["world", "generate", "--episodes", "3", "--out", str(out), "--seed", "2", "--image-size", "48"])
        == 0
    )
    assert (out / "videos/observation.images.top/chunk-000/file-000.mp4").is_file()
    assert main(["world", "show", "--data", str(out)]) == 0
    text = capsys.readouterr().out
    assert "episodes      3" in text and "[48, 48, 3]" in text


def test_no_video_ood_split(tmp_path):
    out = tmp_path / "ood"
    assert (
        main(["world", "generate", "--episodes", "2", "--out", str(out), "--no-video", "--split", "ood"]) == 0
    )
    assert not (out / "videos").exists()


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(["world", "show", "--data", str(tmp_path / "nope")]) == 2
    assert main(["world", "generate", "--episodes", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and "episodes: expected >= 1" in err
    assert list(tmp_path.iterdir()) == []
