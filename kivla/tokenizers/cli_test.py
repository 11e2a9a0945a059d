"""`kivla tokenizer fit / report` end to end on small data, and their user errors."""

import json

import numpy as np

from kivla.cli import main
from kivla.data.chunks import save_chunks
from kivla.tokenizers import load_tokenizer
from kivla.tokenizers.synthetic import smooth_chunks


def test_fit_from_npz_then_load(tmp_path, capsys):
    chunks = smooth_chunks(400, horizon=20, action_dim=3, seed=5)
    save_chunks(tmp_path / "chunks.npz", chunks)
    code = main(["tokenizer", "fit", "--data", str(tmp_path / "chunks.npz"), "--kind", "fast",
                 "--out", str(tmp_path / "tok"), "--set", "vocab_size=256", "--set", "scale=8"])  # fmt: skip
    assert code == 0
    assert "tokens/chunk" in capsys.readouterr().out
    tok = load_tokenizer(tmp_path / "tok")
    assert (tok.kind, tok.horizon, tok.action_dim, tok.vocab_size) == ("fast", 20, 3, 256)
    assert tok.config.scale == 8
    assert tok.decode(tok.encode(chunks[:5]), strict=True).valid.all()


def test_report_json_on_synthetic_chunks(capsys):
    code = main(["tokenizer", "report", "--synthetic", "300", "--kinds", "fast", "binning", "--json",
                 "--set", "fast.vocab_size=512"])  # fmt: skip
    assert code == 0
    reports = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in reports] == ["fast", "binning"]
    fast, binning = reports
    assert fast["vocab_size"] == 512 and fast["tokens_mean"] < binning["tokens_mean"] == 350
    for key in (
        "tokens_median",
        "tokens_p95",
        "rmse",
        "max_abs",
        "encode_chunks_per_s",
        "decode_chunks_per_s",
    ):
        assert np.isfinite(fast[key])
    assert binning["max_abs"] <= 1 / 256 + 1e-6
    assert fast["clipped_fraction"] == 0.0 and 0.0 <= binning["clipped_fraction"] <= 1.0


def test_report_table(capsys):
    assert main(["tokenizer", "report", "--synthetic", "200", "--kinds", "binning"]) == 0
    out = capsys.readouterr().out
    assert "| binning | 256 | 350.0 |" in out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["tokenizer", "fit", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", actions=np.zeros((3, 50, 7)))
    assert main(["tokenizer", "fit", "--data", str(tmp_path / "wrong.npz"), "--out", str(tmp_path)]) == 2
    assert "'chunks'" in capsys.readouterr().err
    assert main(["tokenizer", "report", "--synthetic", "50", "--set", "fast.bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["tokenizer", "fit", "--out", str(tmp_path)]) == 2
    assert "--synthetic" in capsys.readouterr().err
    # A directory is read as a LeRobot dataset: without meta/ (or without the reader) a clear error.
    (tmp_path / "empty").mkdir()
    assert main(["tokenizer", "report", "--data", str(tmp_path / "empty")]) == 2
    assert "empty" in capsys.readouterr().err
