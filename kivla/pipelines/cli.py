"""`kivla pretrain`, `kivla demo` and `kivla study ki|targets`: the commands that train and evaluate.

Each command runs stages of `kivla.train` and `kivla.eval` (language pretraining followed by its
VQA summary; the whole demo; a study) and so lives on the floor above both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kivla.train.cli import add_backbone_args, add_optim_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from kivla.model.presets import SIZES
    from kivla.pipelines.budgets import BUDGETS, STUDIES

    pre = subparsers.add_parser(
        "pretrain",
        help="language-pretrain the built-in VLM (or align a real LM's vision) on captions and VQA",
        description="Trains the built-in backbone on captions, VQA and text from the built-in world so "
        "that it has language priors to keep, reports VQA accuracy on held-out scenes and saves the "
        "checkpoint robot training starts from (`kivla train --init`).",
    )
    pre.add_argument("--out", required=True, type=Path, help="run directory")
    pre.add_argument("--size", choices=SIZES.names(), default="tiny")
    pre.add_argument("--image-size", type=int, default=64)
    pre.add_argument("--resume", action="store_true")
    pre.add_argument("--precision", choices=("auto", "fp32", "bf16"))
    pre.add_argument(
        "--stem-steps", type=int,
        help="first train the tiny VLM's image stem alone on the world's object labels (default 1500 "
        "for the tiny VLM, 30-60 s on 2 CPU cores, as the demo; 0: none)",
    )  # fmt: skip
    add_backbone_args(pre)
    add_optim_args(pre)
    pre.set_defaults(func=run_pretrain)

    demo = subparsers.add_parser(
        "demo",
        help="the main job end to end on the built-in world, with a report",
        description="Generates world data, pretrains the VLM, fits FAST, trains the ki recipe, "
        "evaluates it in closed loop against an untrained policy and its language against the "
        "pretrained backbone, and writes <out>/report.md with plots.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--quick", action="store_true", help="a much smaller run (minutes), for a smoke check")
    demo.set_defaults(func=run_demo)

    st = subparsers.add_parser(
        "study",
        help="the knowledge-insulation study (ki), the discrete-target study (targets), or the real-LM "
        "language study (language: SmolLM2, `make install-real`)",
        description="Trains every variant with N seeds at one budget (naive, stopgrad, joint_fast, ki, "
        "frozen, ki without language co-training; or ki with each discrete target), evaluates every "
        "checkpoint and writes <report>/<study>_study.md with PNG plots and verdicts computed from the "
        "numbers. "
        "Finished runs are cached under --work: rerunning resumes.",
    )
    st.add_argument("study", choices=(*STUDIES.names(), "language"))
    st.add_argument("--quick", action="store_true", help="the small budget (about 30 minutes on 2 CPU cores)")
    st.add_argument("--budget", choices=BUDGETS.names(), help="overrides --quick")
    st.add_argument("--seeds", type=int, default=3)
    st.add_argument("--variants", nargs="+", help="a subset of the study's variants")
    st.add_argument("--work", type=Path, default=Path("runs/study"), help="datasets, runs and caches")
    st.add_argument("--report", type=Path, default=Path("docs/results"), help="where the report goes")
    st.add_argument("--steps", type=int, help="override the budget's training steps")
    st.add_argument("--flow-weights", type=float, nargs="+",
                    help="language study: more naive and ki runs, flow loss weighted by each")  # fmt: skip
    st.set_defaults(func=run_study_command)


def run_pretrain(args: argparse.Namespace) -> int:
    from kivla.train.distributed import init_distributed, shutdown_distributed
    from kivla.train.run import WORLD_STEM_STEPS, PretrainConfig, pretrain_backbone

    values = {
        k: getattr(args, k)
        for k in ("steps", "batch_size", "lr", "seed", "backbone", "vision", "precision", "stem_steps")
        if getattr(args, k) is not None
    }
    if args.stem_steps is None and values.get("backbone", "tiny") == "tiny":
        values["stem_steps"] = WORLD_STEM_STEPS
    config = PretrainConfig(out=args.out, size=args.size, image_size=args.image_size, **values)
    ctx = init_distributed()
    try:
        progress = not args.no_progress and ctx.is_main
        checkpoint = pretrain_backbone(config, progress=progress, resume=args.resume, ctx=ctx)
    finally:
        shutdown_distributed()
    if ctx.is_main:
        from kivla.eval.language import pretrain_summary

        print(pretrain_summary(checkpoint))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from kivla.pipelines.demo import DEMOS, run_demo_pipeline

    report = run_demo_pipeline(args.out, DEMOS["quick" if args.quick else "demo"])
    print(f"report: {report}")
    return 0


def run_study_command(args: argparse.Namespace) -> int:
    from kivla.pipelines.study import StudyConfig, run_study

    if args.study == "language":  # the real SmolLM2 backbone (kivla.pipelines.language_study)
        from kivla.pipelines.language_study import LanguageStudyConfig, run_language_study

        steps = {"steps": args.steps} if args.steps is not None else {}
        variants = {"recipes": tuple(args.variants)} if args.variants else {}
        weights = {"flow_weights": tuple(args.flow_weights)} if args.flow_weights else {}
        config = LanguageStudyConfig(work=args.work, report=args.report, **steps, **variants, **weights)
        print(run_language_study(config))
        return 0
    if args.flow_weights:
        raise ValueError("--flow-weights: only the language study sweeps the flow weight")
    budget = args.budget or ("quick" if args.quick else "full")
    overrides = {"steps": args.steps} if args.steps is not None else {}
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps: expected >= 1, got {args.steps}")
    config = StudyConfig(
        study=args.study,
        budget=budget,
        seeds=args.seeds,
        work=args.work,
        report=args.report,
        variants=tuple(args.variants or ()),
        overrides=overrides,
    )
    print(run_study(config))
    return 0
