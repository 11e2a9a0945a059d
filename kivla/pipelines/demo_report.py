"""The demo's `report.md`: its numbers, training curves and timings, from `results.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kivla.eval.language import markdown as language_markdown
from kivla.eval.plots import curves
from kivla.eval.rollout import success_interval
from kivla.io import write_text
from kivla.train.metrics import read_metrics


def loss_curves(metrics_path: Path, png: Path, title: str) -> Path:
    """Total and per-loss training curves of a run's metrics.jsonl."""
    records = [r for r in read_metrics(metrics_path) if "loss" in r]
    step = np.array([r["step"] for r in records], dtype=float)
    zero = np.zeros_like(step)
    names = ("flow", "fast", "lm", "vision", "keypoint")
    panels = {
        name: {name: (step, np.array([r[key] for r in records]), zero)}
        for name, key in (("total", "loss"), *((n, f"loss/{n}") for n in names))
        if all(key in r for r in records)
    }
    return curves(png, panels, "step", "loss", title)


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.1%}"


def _success(s: dict[str, Any]) -> str:
    """`18.8% (10–32%)`: the rate and its 95% Wilson interval over the episodes."""
    low, high = success_interval(round(s["success_rate"] * s["episodes"]), s["episodes"])
    return f"{_pct(s['success_rate'])} ({low:.0%}–{high:.0%})"


def write_demo_report(out: Path, results: dict[str, Any]) -> Path:
    """`out/report.md` (and `out/loss_curves.png`) from the demo's results."""
    out = Path(out)
    cfg = results["config"]
    loss_png = loss_curves(out / "ki" / "metrics.jsonl", out / "loss_curves.png", "ki co-training")
    pre_png = loss_curves(
        out / "pretrain" / "metrics.jsonl", out / "pretrain_curve.png", "language pretraining"
    )
    ev = results["closed_loop"]
    lines = [
        "# kivla demo report",
        "",
        f"Built-in world, {cfg['episodes']} expert episodes ({cfg['image_size']}×{cfg['image_size']} "
        f"images); `{cfg['size']}` policy; language pretraining {cfg['pretrain_steps']} steps, then the "
        f"**ki** recipe (stop-gradient + FAST + language co-training) {cfg['train_steps']} steps at batch "
        f"{cfg['train_batch']}, lr {cfg['lr']:g}, perception `{cfg.get('perception', 'prefix')}` "
        "(`kivla.model.presets.PERCEPTIONS`). "
        "Every number below was measured by this run (`results.json` has them all).",
        "",
        "## Closed loop",
        "",
        "Receding horizon: 10 actions of each 50-step chunk, then replan. *Untrained* is the same policy "
        "before robot training (pretrained backbone, fresh action expert).",
        "",
        "| policy | split | success (95% interval) | follow | mean length |",
        "|---|---|---:|---:|---:|",
    ]
    for name in ("ki", "untrained"):
        for split, s in ev[name].items():
            rates = f"{_success(s)} | {_pct(s['follow_rate'])}"
            lines.append(f"| {name} | {split} | {rates} | {s['mean_length']:.0f} |")
    gains = {
        split: ev["ki"][split]["success_rate"] - ev["untrained"][split]["success_rate"] for split in ev["ki"]
    }
    lines += [
        "",
        "Success gain of training over the untrained policy: "
        + ", ".join(f"{split} {100 * g:+.1f} points" for split, g in gains.items())
        + ".",
        "",
        "Per task family (ki):",
        "",
        "| split | family | success (95% interval) | follow |",
        "|---|---|---:|---:|",
    ]
    for split, s in ev["ki"].items():
        for fam, f in s["families"].items():
            lines.append(f"| {split} | {fam} | {_success(f)} | {_pct(f['follow_rate'])} |")
    val = results["flow_validation"]
    lines += [
        "",
        "## Flow validation",
        "",
        "MSE of sampled chunks (10 Euler steps) against held-out expert chunks, normalized units:",
        "",
        "| policy | MSE |",
        "|---|---:|",
        *(f"| {name} | {v['mse']:.4f} |" for name, v in val.items()),
        "",
        language_markdown(results["language"]).replace(
            "## Language", "## Language retention (ki vs pretrained)"
        ),
        "",
        "## Training curves",
        "",
        f"![ki losses]({loss_png.name})",
        "",
        f"![pretraining]({pre_png.name})",
        "",
        "## Time",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {k} | {v:.0f} |" for k, v in results["timings_s"].items()),
        "",
        f"Checkpoints: pretrained `{results['checkpoints']['pretrained']}`, "
        f"ki `{results['checkpoints']['ki']}`. Rollout GIFs: `eval/<policy>/videos/`.",
        "",
    ]
    return write_text(out / "report.md", "\n".join(lines))
