"""Numbers to verdicts: seed statistics of checkpoint metrics and the claims each study can test.

A verdict compares two variants on one metric: "better" / "worse" when the means differ by more
than the larger of their seed standard deviations, "within noise" otherwise. With one seed the std
is 0 and every difference counts, so single-seed reports say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Metric = Callable[[dict], float]
METRICS: dict[str, tuple[str, Metric, bool]] = {  # key -> (label, accessor, higher is better)
    "flow_mse": ("flow val MSE", lambda c: c["flow_mse"], False),
    "success_id": ("success ID", lambda c: c["rollout"]["train"]["success_rate"], True),
    "success_ood": ("success OOD", lambda c: c["rollout"]["ood"]["success_rate"], True),
    "follow_id": ("follow ID", lambda c: c["rollout"]["train"]["follow_rate"], True),
    "follow_ood": ("follow OOD", lambda c: c["rollout"]["ood"]["follow_rate"], True),
    "vqa": ("VQA acc", lambda c: c["language"]["vqa_accuracy"], True),
    "vqa_retention": ("VQA retention", lambda c: c["retention"]["vqa_accuracy"], True),
    "caption_ppl": ("caption ppl", lambda c: c["language"]["caption_perplexity"], False),
    "caption_retention": ("caption retention", lambda c: c["retention"]["caption_perplexity"], True),
}


def held_out_retention(types: list[str]) -> Metric:
    def metric(c: dict) -> float:
        values = [c["retention"]["vqa_per_type"].get(q, math.nan) for q in types]
        return float(np.mean(values)) if values else math.nan

    return metric


def stats(runs: list[dict], metric: Metric, which: int = -1) -> tuple[float, float]:
    """(mean, std) over seeds of metric at checkpoint `which`."""
    values = np.array([metric(r["checkpoints"][which]) for r in runs], dtype=np.float64)
    return float(values.mean()), float(values.std())


def auc(runs: list[dict], metric: Metric) -> tuple[float, float]:
    """(mean, std) over seeds of the metric averaged over all checkpoints (area under the curve)."""
    values = np.array([np.mean([metric(c) for c in r["checkpoints"]]) for r in runs], dtype=np.float64)
    return float(values.mean()), float(values.std())


def curve(runs: list[dict], metric: Metric) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps = np.array([c["step"] for c in runs[0]["checkpoints"]], dtype=np.float64)
    values = np.array([[metric(c) for c in r["checkpoints"]] for r in runs], dtype=np.float64)
    return steps, values.mean(axis=0), values.std(axis=0)


def fmt(mean: float, std: float, percent: bool = False) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.1%} ± {std:.1%}" if percent else f"{mean:.3g} ± {std:.2g}"


def compare(a: tuple[float, float], b: tuple[float, float], higher_better: bool = True) -> str:
    if math.isnan(a[0]) or math.isnan(b[0]):
        return "n/a"
    diff = (a[0] - b[0]) * (1 if higher_better else -1)
    noise = max(a[1], b[1])
    return "better" if diff > noise else "worse" if diff < -noise else "within noise"


def _verdict(outcome: str, expected: str = "better") -> str:
    if outcome == "n/a":
        return "**not measurable** (a metric is undefined at this budget)"
    if outcome == expected:
        return "**reproduced**"
    return (
        "**not resolved** (difference within seed noise)"
        if outcome == "within noise"
        else "**did not reproduce**"
    )


def claims_ki(runs: dict[str, list[dict]], held_out: list[str], gradients: dict | None) -> list[str]:
    """One bullet per claim of the KI paper / the seed that this study's variants can test."""
    out = []
    m = {k: (v[1], v[2]) for k, v in METRICS.items()}

    def have(*names: str) -> bool:
        return all(n in runs for n in names)

    if have("ki", "naive"):
        a, b = auc(runs["ki"], m["success_id"][0]), auc(runs["naive"], m["success_id"][0])
        fa, fb = auc(runs["ki"], m["flow_mse"][0]), auc(runs["naive"], m["flow_mse"][0])
        out.append(
            f"KI trains faster than naive (π0-style) co-training: ID success averaged over checkpoints "
            f"{fmt(*a, True)} vs {fmt(*b, True)} → {_verdict(compare(a, b))}; flow val MSE averaged "
            f"over checkpoints {fmt(*fa)} vs {fmt(*fb)} → {_verdict(compare(fa, fb, False))}."
        )
        a, b = stats(runs["ki"], m["vqa_retention"][0]), stats(runs["naive"], m["vqa_retention"][0])
        out.append(
            f"KI keeps the backbone's language better than naive: final VQA retention {fmt(*a)} vs "
            f"{fmt(*b)} → {_verdict(compare(a, b))}."
        )
        a, b = stats(runs["ki"], m["follow_ood"][0]), stats(runs["naive"], m["follow_ood"][0])
        out.append(
            f"KI follows OOD instructions at least as well as naive: final OOD follow rate "
            f"{fmt(*a, True)} vs {fmt(*b, True)} → {_verdict(compare(a, b))}."
        )
    if have("ki", "ki_no_lang") and held_out:
        metric = held_out_retention(held_out)
        a, b = stats(runs["ki"], metric), stats(runs["ki_no_lang"], metric)
        out.append(
            f"Language co-training protects language, including question types it never shows "
            f"({', '.join(held_out)}): retention {fmt(*a)} (ki) vs {fmt(*b)} (ki without language) → "
            f"{_verdict(compare(a, b))}."
        )
    if have("ki", "stopgrad", "joint_fast", "ki_no_lang"):
        ood = m["success_ood"][0]
        ki = stats(runs["ki"], ood)
        drops = {
            n: ki[0] - stats(runs[v], ood)[0]
            for n, v in (
                ("FAST loss", "stopgrad"),
                ("stop-gradient", "joint_fast"),
                ("language co-training", "ki_no_lang"),
            )
        }
        noise = max(stats(runs[v], ood)[1] for v in ("ki", "stopgrad", "joint_fast", "ki_no_lang"))
        biggest = max(drops, key=drops.get)
        ok = biggest == "FAST loss" and drops[biggest] > noise
        text = ", ".join(f"without {k}: {v:+.1%}" for k, v in drops.items())
        verdict = (
            "**reproduced**"
            if ok
            else (
                "**not resolved** (all drops within seed noise)"
                if max(drops.values()) <= noise
                else "**did not reproduce**"
            )
        )
        out.append(
            f"Removing the FAST loss hurts OOD success most (drop from ki's {ki[0]:.1%}; {text}; "
            f"seed noise {noise:.1%}) → {verdict}."
        )
    if gradients and gradients.get("last"):
        g = gradients["last"]
        spread = g["flow_norm_spread"]
        rel = [b["relative_variance"] for b in g["flow"]]
        out.append(
            f"The flow gradient on the backbone is non-stationary in t: its mean norm varies {spread:.2f}× "
            f"across the {len(rel)} t bins (naive, step {g['step']}) → "
            f"{'**reproduced**' if spread >= 2 else '**did not reproduce** (less than 2×)'}."
        )
        trained = gradients.get("joint_fast_last")
        if trained is not None and trained["fast"] is not None:
            g = trained  # both losses reach the backbone and the FAST head is trained: the fair comparison
            rel = [b["relative_variance"] for b in g["flow"]]
        if g["fast"] is not None:
            f = g["fast"]["relative_variance"]
            ok = f < float(np.median(rel))
            out.append(
                f"The FAST cross-entropy gradient is better behaved ({g.get('variant', 'naive')}, step "
                f"{g['step']}): relative variance {f:.3f} vs the "
                f"flow's {min(rel):.3f}–{max(rel):.3f} across t → "
                f"{'**reproduced**' if ok else '**did not reproduce**'}."
            )
    return out


def claims_targets(runs: dict[str, list[dict]]) -> list[str]:
    """Which discrete target serves KI best (the seed's open question)."""
    out = []
    ood, ret = METRICS["success_ood"][1], METRICS["vqa_retention"][1]
    discrete = [n for n in runs if n != "ki_none"]
    if discrete:
        ranked = sorted(discrete, key=lambda n: stats(runs[n], ood)[0], reverse=True)
        out.append(
            "Final OOD success by target: "
            + ", ".join(f"{n.removeprefix('ki_')} {fmt(*stats(runs[n], ood), True)}" for n in ranked)
            + "."
        )
        if "ki_none" in runs:
            best = ranked[0]
            a, b = stats(runs[best], ood), stats(runs["ki_none"], ood)
            out.append(
                f"A discrete target helps (best, {best.removeprefix('ki_')}, vs none): OOD success "
                f"{fmt(*a, True)} vs {fmt(*b, True)} → {_verdict(compare(a, b))}."
            )
        if "ki_fast" in runs and len(ranked) > 1:
            others = [n for n in ranked if n != "ki_fast"]
            a, b = stats(runs["ki_fast"], ood), stats(runs[others[0]], ood)
            out.append(
                f"FAST specifically vs the best other target ({others[0].removeprefix('ki_')}): "
                f"{fmt(*a, True)} vs {fmt(*b, True)} → {compare(a, b)}."
            )
            a, b = stats(runs["ki_fast"], ret), stats(runs[others[0]], ret)
            out.append(
                f"VQA retention, FAST vs {others[0].removeprefix('ki_')}: {fmt(*a)} vs {fmt(*b)} → "
                f"{compare(a, b)}."
            )
    return out
