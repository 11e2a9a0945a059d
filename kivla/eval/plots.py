"""PNG plots of the studies (matplotlib, Agg backend): curves with ±std bands, grouped bars, gradients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kivla.io import atomic_file

Series = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name -> (x [N], mean [N], std [N])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def curves(path: Path, panels: dict[str, Series], xlabel: str, ylabel: str, title: str,
           logy: bool = False) -> Path:  # fmt: skip
    """One subplot per panel; each series a line with a ±std band over seeds."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items(), strict=True):
        for name, (x, mean, std) in series.items():
            (line,) = ax.plot(x, mean, marker="o", markersize=3, label=name)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def bars(path: Path, groups: list[str], bars: dict[str, tuple[np.ndarray, np.ndarray]], ylabel: str,
         title: str, reference: float | None = None) -> Path:  # fmt: skip
    """Grouped bars (one group per variant, one bar per metric) with ±std error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(bars)) / 2 + 2), 3.8))
    width = 0.8 / max(1, len(bars))
    x = np.arange(len(groups))
    for i, (label, (mean, std)) in enumerate(bars.items()):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, mean, width, yerr=std, capsize=3, label=label)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1)
    ax.set_xticks(x, groups, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def gradient_variance(path: Path, study: dict[str, Any]) -> Path:
    """Mean gradient norm and relative variance of the flow loss per t bin (one line per checkpoint),
    with the t-independent discrete CE as horizontal lines."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.8))
    for label in ("first", "last", "joint_fast_last"):
        s = study.get(label)
        if not s:
            continue
        name = f"{s.get('variant', study.get('variant', ''))} step {s['step']}"
        centers = [(b["t_low"] + b["t_high"]) / 2 for b in s["flow"]]
        for ax, key in zip(axes, ("mean_norm", "relative_variance"), strict=True):
            (line,) = ax.plot(centers, [b[key] for b in s["flow"]], marker="o", label=f"flow, {name}")
            if s["fast"] is not None:
                ax.axhline(s["fast"][key], color=line.get_color(), linestyle="--", label=f"FAST CE, {name}")
    axes[0].set_ylabel("mean ‖∇ backbone‖")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("tr Cov(g) / E‖g‖²")
    for ax in axes:
        ax.set_xlabel("flow time t (0 = noise, 1 = clean)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("backbone gradient across flow time (uninsulated recipes)")
    return _save(fig, path)
