"""The documented longer run of docs/learning.md: one ki training with the demo's perception, every
saved checkpoint evaluated in closed loop (48 episodes a split, the demo's evaluation seeds), the
final one on 96 episodes a split, written to one JSON file and a PNG of the curves.

    make demo  # runs/demo/data, runs/demo/val, runs/demo/pretrain
    kivla world generate --episodes 1200 --seed 0 --out runs/data1200
    python -u experiments/long_run.py --out runs/long/ki_gp18_be4_5400_d1200 --data runs/data1200 \
        --steps 5400 --backbone-every 4 --save-every 1800 --json docs/results/long_run_round18.json

(the eighteenth round's run; the sixteenth's was the demo's 300 episodes, `--steps 8400
--save-every 2100 --json docs/results/long_run.json`).

Training and evaluation run one after the other (never side by side: two jobs on two cores halve
each other's speed). A finished training is not run again (its final checkpoint exists).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from kivla.eval.baselines import BundlePolicy
from kivla.eval.plots import curves
from kivla.eval.rollout import EvalConfig, evaluate
from kivla.eval.validation import ValidationConfig, flow_validation
from kivla.model.bundle import PolicyBundle
from kivla.pipelines.stages import finished_run
from kivla.train.checkpoint import list_checkpoints
from kivla.train.config import TrainConfig
from kivla.train.metrics import read_metrics
from kivla.train.run import RunConfig, train_policy


def closed_loop(bundle: PolicyBundle, episodes: int, out: Path) -> dict:
    config = EvalConfig(episodes=episodes, image_size=bundle.builder.image_size, videos=0)
    return evaluate(BundlePolicy(bundle, seed=0), config, out).summary()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--data", type=Path, default=Path("runs/demo/data"))
    p.add_argument("--val", type=Path, default=Path("runs/demo/val"))
    p.add_argument("--init", type=Path, default=Path("runs/demo/pretrain/checkpoints/step_00000600"))
    p.add_argument("--perception", default="goal_point")
    p.add_argument("--steps", type=int, default=8400)
    p.add_argument("--backbone-every", type=int, default=4)
    p.add_argument("--save-every", type=int, default=2100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=48, help="per split at every checkpoint")
    p.add_argument("--final-episodes", type=int, default=96, help="per split at the final checkpoint")
    p.add_argument("--json", type=Path, required=True, help="where the results go")
    args = p.parse_args()

    train = TrainConfig(steps=args.steps, batch_size=32, lr=args.lr, warmup_steps=max(1, args.steps // 20),
                        save_every=args.save_every, keep_last=args.steps // args.save_every + 1,
                        log_every=max(1, args.steps // 50), seed=args.seed)  # fmt: skip
    run = RunConfig(recipe="ki", data=args.data, out=args.out, init=args.init, perception=args.perception,
                    backbone_every=args.backbone_every, train=train)  # fmt: skip
    train_s = None
    if finished_run(args.out, args.steps) is None:
        start = time.time()
        train_policy(run, progress=False)
        train_s = round(time.time() - start)
    checkpoints = list_checkpoints(args.out / "checkpoints")
    curve = []
    for checkpoint in checkpoints:
        start = time.time()
        bundle = PolicyBundle.load(checkpoint)
        summary = closed_loop(bundle, args.episodes, args.out / "eval" / checkpoint.name)
        mse = flow_validation(bundle, args.val, ValidationConfig(num_frames=256))["mse"]
        step = int(checkpoint.name.removeprefix("step_"))
        curve.append({"step": step, "flow_validation_mse": mse, "eval_s": round(time.time() - start),
                      **summary})  # fmt: skip
        ind, ood = summary["train"], summary["ood"]
        print(f"step {step}: ID {ind['success_rate']:.1%} OOD {ood['success_rate']:.1%} follow "
              f"{ind['follow_rate']:.0%} / {ood['follow_rate']:.0%} flow val {mse:.3f}")  # fmt: skip
    final = closed_loop(bundle, args.final_episodes, args.out / "eval" / "final")
    history = read_metrics(args.out / "metrics.jsonl")
    result = {
        "what": f"ki with the {args.perception} perception from {args.init}, {args.steps} steps at batch 32, "
        f"lr {args.lr}, the backbone's losses every {args.backbone_every} steps "
        "(RunConfig.backbone_every); every saved checkpoint on "
        f"{args.episodes} episodes a split, the final one on {args.final_episodes}; one cosine schedule: "
        "intermediate checkpoints are not what a shorter run would give",
        "machine": f"{platform.processor() or platform.machine()}, 2 CPU cores expected, --precision auto",
        "command": "python experiments/long_run.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "train_s": train_s,
        "steps_per_s": [r["steps_per_s"] for r in history if "steps_per_s" in r],
        "final_losses": {k: v for k, v in history[-1].items() if k.startswith("loss")},
        "curve": curve,
        f"final_checkpoint_{args.final_episodes}_episodes": final,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    steps = np.array([c["step"] for c in curve], dtype=float)
    zero = np.zeros_like(steps)
    panels = {
        "success": {
            split: (steps, np.array([c[split]["success_rate"] for c in curve]), zero)
            for split in ("train", "ood")
        },
        "flow validation MSE": {
            "held-out": (steps, np.array([c["flow_validation_mse"] for c in curve]), zero)
        },
    }
    curves(args.json.with_suffix(".png"), panels, "step", "", f"ki, {args.perception}, {args.steps} steps")
    print(json.dumps({"train_s": train_s, "final": {s: final[s]["success_rate"] for s in final}}))


if __name__ == "__main__":
    main()
