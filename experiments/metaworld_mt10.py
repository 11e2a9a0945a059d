"""Meta-World MT10 (docs/metaworld.md): scripted-expert data, ki / naive / frozen trained from
scratch on it, each evaluated closed loop, and docs/results/metaworld.md + .json written with
the per-task table beside the expert and random bounds.

    python experiments/metaworld_mt10.py --out runs/mt10                # everything (~2 h on 2 cores)
    python experiments/metaworld_mt10.py --out runs/mt10 --recipes ki naive frozen stopgrad
    python experiments/metaworld_mt10.py --out runs/mt10 --report-only  # the tables from finished runs

Each stage is the `kivla` command docs/metaworld.md shows; a stage whose output exists is
skipped, so an interrupted run continues. Wall time per stage goes to OUT/timing.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from kivla.eval.metaworld_report import comparison_markdown, load_summary
from kivla.io import write_json, write_text
from kivla.pipelines.stages import finished_run

# Published MT50 averages quoted by the Meta-World issue: other models, other budgets.
PUBLISHED_MT50 = (
    ("SmolVLA (0.45B)", "57.3%"), ("π0", "47.9–50.5%"), ("π0.5", "43.8%"), ("Diffusion Policy", "10.5%"),
)  # fmt: skip


def kivla(*args: str) -> None:
    print("$ kivla " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "kivla", *args], check=True)


def run_stages(args: argparse.Namespace, out: Path) -> None:
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}

    def stage(name: str, done: bool, *command: str) -> None:
        if done:
            return
        start = time.perf_counter()
        kivla(*command)
        timing[name] = round(time.perf_counter() - start, 1)
        write_json(timing_path, timing)

    data = out / "data"
    stage("generate", data.exists(), "metaworld", "generate", "--tasks", "mt10",
          "--episodes", str(args.episodes), "--image-size", str(args.image_size), "--camera", "corner4",
          "--out", str(data))  # fmt: skip
    for recipe in args.recipes:
        stage(f"train_{recipe}", finished_run(out / recipe, args.steps) is not None,
              "train", "--recipe", recipe, "--data", str(data), "--out", str(out / recipe),
              "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
              "--save-every", str(args.steps), "--log-every", "20", "--no-progress")  # fmt: skip
        stage(f"eval_{recipe}", (out / f"eval_{recipe}" / "eval.json").is_file(),
              "eval", "--env", "metaworld", "--tasks", "mt10", "--episodes", str(args.eval_episodes),
              "--policy", str(out / recipe), "--out", str(out / f"eval_{recipe}"))  # fmt: skip


def training_row(out: Path, recipe: str, timing: dict) -> dict:
    run = json.loads((out / recipe / "run.json").read_text())["run"]
    last = json.loads((out / recipe / "metrics.jsonl").read_text().splitlines()[-1])
    losses = {k.split("/")[1]: round(v, 4) for k, v in last.items() if k.startswith("loss/") and v}
    return {"recipe": recipe, "steps": last["step"], "batch_size": run["train"]["batch_size"],
            "lr": run["train"]["lr"], "train_seconds": timing.get(f"train_{recipe}"),
            "eval_seconds": timing.get(f"eval_{recipe}"), "final_losses": losses}  # fmt: skip


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def report(args: argparse.Namespace, out: Path) -> None:
    timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").is_file() else {}
    summaries = {"expert": load_summary(args.bounds, policy="expert")}
    summaries |= {r: load_summary(out / f"eval_{r}") for r in args.recipes}
    summaries["random"] = load_summary(args.bounds, policy="random")
    training = [training_row(out, r, timing) for r in args.recipes]
    data_info = json.loads((out / "data" / "meta" / "info.json").read_text())
    run = f"python experiments/metaworld_mt10.py --out {out} --recipes {' '.join(args.recipes)}"
    lines = [
        f"# Meta-World MT10: {', '.join(args.recipes)}, trained from scratch on 2 CPU cores", "",
        f"Written by `{run} --report-only` from the runs of `{run}` (docs/metaworld.md). Data: "
        f"{data_info['total_episodes']} scripted-expert episodes ({args.episodes} a task, benchmark "
        f"seed 0), {data_info['total_frames']} frames, corner4 camera at {args.image_size} px, 4-d "
        f"hand state, one instruction a task. Evaluation: {args.eval_episodes} episodes a task on "
        "benchmark seed 1 "
        "(placements not in the data), 500-step limit, 10 actions of each 50-step chunk executed "
        "before replanning. The `tiny` size (~5M parameters) with a randomly initialized backbone "
        "(`frozen` keeps it at those random weights), co-trained with the world's captions / VQA / "
        "text at the default mixture (robot 0.7). "
        "Expert and random: docs/results/metaworld_bounds.json.", "",
        comparison_markdown(summaries),
        "### Training", "",
        "| recipe | steps | batch | lr | train time | eval time | losses at the last logged step |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for t in training:
        train, evaluate = (_minutes(t[k]) for k in ("train_seconds", "eval_seconds"))
        losses = ", ".join(f"{k} {v:.3g}" for k, v in t["final_losses"].items())
        lines.append(f"| {t['recipe']} | {t['steps']} | {t['batch_size']} | {t['lr']:g} | {train} | "
                     f"{evaluate} | {losses} |")  # fmt: skip
    lines += ["", "### Context: other models, other budgets, on MT50 (published, not measured here)", "",
              "| model | MT50 average success |", "|---|---:|"]  # fmt: skip
    lines += [f"| {name} | {rate} |" for name, rate in PUBLISHED_MT50]
    lines.append("")
    write_text(args.results.with_suffix(".md"), "\n".join(lines))
    write_json(args.results.with_suffix(".json"), {
        "data": {"episodes_per_task": args.episodes, "image_size": args.image_size,
                 "episodes": data_info["total_episodes"], "frames": data_info["total_frames"]},
        "training": training, "summaries": summaries, "timing": timing,
    })  # fmt: skip
    print(f"written: {args.results.with_suffix('.md')}, .json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/mt10"))
    p.add_argument("--recipes", nargs="+", default=["ki", "naive", "frozen"])
    p.add_argument("--episodes", type=int, default=50, help="expert episodes a task")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes a task")
    p.add_argument("--bounds", type=Path, default=Path("docs/results/metaworld_bounds.json"))
    p.add_argument("--results", type=Path, default=Path("docs/results/metaworld"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    if not args.report_only:
        run_stages(args, args.out)
    report(args, args.out)


if __name__ == "__main__":
    main()
