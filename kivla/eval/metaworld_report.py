"""Meta-World results side by side: one column per policy, success per task, group and overall.

Reads what `kivla eval --env metaworld` writes (`eval.json` / `report.json`, or a file holding
several under "policies", as docs/results/metaworld_bounds.json does) and writes one markdown
table of success rates (the overall row with its 95% Wilson interval; tasks in MT10's order) and
one of mean episode lengths (a failure counts as the step limit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kivla.data.metaworld_tasks import DIFFICULTY, GROUP_OF, MT10
from kivla.eval.rollout import success_interval


def load_summary(path: str | Path, policy: str | None = None) -> dict[str, Any]:
    """The "summary" of a Meta-World evaluation: an eval directory, its eval.json / report.json,
    or (with `policy`) the entry `policies[policy]` of a file that holds several."""
    path = Path(path)
    file = path / "eval.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no Meta-World evaluation (expected eval.json or report.json)")
    data = json.loads(file.read_text())
    if policy is not None:
        if policy not in data.get("policies", {}):
            raise ValueError(f"{file}: no policy {policy!r} (has {sorted(data.get('policies', {}))})")
        data = data["policies"][policy]
    if "tasks" not in data.get("summary", {}):
        raise ValueError(f"{file}: not a Meta-World evaluation (no summary.tasks)")
    return data["summary"]


def _pct(rates: dict[str, Any] | None) -> str:
    return "–" if rates is None else f"{rates['success_rate']:.0%}"


def _length(rates: dict[str, Any] | None) -> str:
    return "–" if rates is None else f"{rates['mean_length']:.0f}"


def _overall(rates: dict[str, Any]) -> str:
    n = rates["episodes"]
    low, high = success_interval(round(rates["success_rate"] * n), n)
    return f"**{rates['success_rate']:.1%}** ({low:.0%}–{high:.0%})"


def _task_order(task: str) -> tuple[int, str]:
    """MT10's tasks in MT10's order, then the others by name."""
    return (MT10.index(task) if task in MT10 else len(MT10), task)


def comparison_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """Two tables (success, mean length) with a column per policy of `summaries` {name: summary}:
    the union of their tasks, then the difficulty groups, then all episodes."""
    columns = list(summaries.values())
    tasks = sorted({t for s in columns for t in s["tasks"]}, key=_task_order)
    groups = [g for g in DIFFICULTY if any(g in s["groups"] for s in columns)]
    head = "| task | group | " + " | ".join(summaries) + " |"
    rule = "|---|---|" + "---:|" * len(columns)

    def line(name: str, group: str, cells) -> str:
        return f"| {name} | {group} | " + " | ".join(cells) + " |"

    def table(cell, overall) -> list[str]:
        rows = [line(t, GROUP_OF[t], (cell(s["tasks"].get(t)) for s in columns)) for t in tasks]
        rows += [line(f"**{g}**", "", (cell(s["groups"].get(g)) for s in columns)) for g in groups]
        return [head, rule, *rows, line("**all**", "", (overall(s["all"]) for s in columns))]

    return "\n".join([
        "### Success", "", *table(_pct, _overall), "",
        "### Mean episode length (steps)", "", *table(_length, _length),
    ]) + "\n"  # fmt: skip
