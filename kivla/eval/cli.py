"""`kivla eval` (closed loop + language + flow validation of one policy) and `kivla study ki|targets`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "eval",
        help="closed-loop success / follow rate in the built-in world, language retention, flow validation",
        description="Runs a policy (a bundle or checkpoint directory, or the --oracle / --random baselines) "
        "in the built-in world: success rate, follow rate and episode length per task family on the train "
        "(ID) and held-out (OOD) instruction splits, a few GIF rollouts, eval.json and eval.md in --out. "
        "With --reference, VQA / caption metrics against a pretrained bundle; with --data, the flow "
        "validation MSE on a held-out LeRobot dataset.",
    )
    who = ev.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--policy",
        type=Path,
        help="policy bundle or checkpoint directory (a run directory: its latest checkpoint)",
    )
    who.add_argument(
        "--server",
        metavar="ws://HOST:PORT",
        help="a running `kivla serve`: the closed loop queries it (same seeds, same chunks as in process)",
    )
    who.add_argument("--oracle", action="store_true", help="the scripted expert (upper bound)")
    who.add_argument("--random", action="store_true", help="uniform random actions (lower bound)")
    ev.add_argument("--episodes", type=int, default=40, help="episodes per split, spread over the families")
    ev.add_argument("--split", choices=("train", "ood", "both"), default="both")
    ev.add_argument("--out", type=Path, help="output directory (default runs/eval/<policy name>)")
    ev.add_argument("--reference", type=Path, help="pretrained bundle: report language retention against it")
    ev.add_argument("--data", type=Path, help="held-out LeRobot dataset: report the flow validation MSE")
    ev.add_argument("--num-envs", type=int, default=16)
    ev.add_argument(
        "--execute-steps", type=int, default=10, help="actions executed per chunk before replanning"
    )
    ev.add_argument("--max-steps", type=int, default=200, help="episode step limit")
    ev.add_argument("--videos", type=int, default=2, help="GIF rollouts saved per split")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--api-key", help="with --server: its API key (default: $KIVLA_API_KEY)")
    ev.add_argument("--json", action="store_true", help="print the results as one JSON object")
    ev.set_defaults(func=run_eval)

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
    st.add_argument("study", choices=("ki", "targets", "language"))
    st.add_argument("--quick", action="store_true", help="the small budget (about 30 minutes on 2 CPU cores)")
    st.add_argument("--budget", choices=("test", "quick", "full"), help="overrides --quick")
    st.add_argument("--seeds", type=int, default=3)
    st.add_argument("--variants", nargs="+", help="a subset of the study's variants")
    st.add_argument("--work", type=Path, default=Path("runs/study"), help="datasets, runs and caches")
    st.add_argument("--report", type=Path, default=Path("docs/results"), help="where the report goes")
    st.add_argument("--steps", type=int, help="override the budget's training steps")
    st.set_defaults(func=run_study_command)


def resolve_policy_dir(path: Path) -> Path:
    """A bundle / checkpoint directory as is; a training run directory -> its latest checkpoint."""
    if not (path / "policy.json").is_file() and (path / "checkpoints").is_dir():
        from kivla.train.checkpoint import latest_checkpoint

        return latest_checkpoint(path / "checkpoints") or path
    return path


def run_eval(args: argparse.Namespace) -> int:
    import json

    from kivla.eval.baselines import BundlePolicy, OraclePolicy, RandomPolicy
    from kivla.eval.rollout import EvalConfig, evaluate

    if args.episodes < 1:
        raise ValueError(f"--episodes: expected >= 1, got {args.episodes}")
    if (args.reference is not None or args.data is not None) and args.policy is None:
        raise ValueError("--reference / --data: need --policy (the baselines and --server have no backbone)")
    bundle = None
    if args.server:
        import os

        from kivla.serve.client import ServerPolicy

        policy = ServerPolicy(
            args.server, seed=args.seed, api_key=args.api_key or os.environ.get("KIVLA_API_KEY")
        )
        name, image_size = f"server_{policy.name}", policy.image_size
    elif args.oracle:
        policy, name, image_size = OraclePolicy(), "oracle", 64
    elif args.random:
        policy, name, image_size = RandomPolicy(seed=args.seed), "random", 64
    else:
        from kivla.model.bundle import PolicyBundle

        path = resolve_policy_dir(args.policy)
        bundle = PolicyBundle.load(path)
        policy = BundlePolicy(bundle, seed=args.seed)
        name = f"{path.parent.parent.name}_{path.name}" if path.parent.name == "checkpoints" else path.name
        image_size = bundle.builder.image_size
    splits = ("train", "ood") if args.split == "both" else (args.split,)
    config = EvalConfig(
        episodes=args.episodes,
        splits=splits,
        num_envs=args.num_envs,
        execute_steps=args.execute_steps,
        max_steps=args.max_steps,
        image_size=image_size,
        seed=args.seed,
        videos=args.videos,
    )
    out = args.out or Path("runs/eval") / name
    try:
        result = evaluate(policy, config, out_dir=out)
    finally:
        if args.server:
            policy.close()
    report = {"policy": str(path) if bundle else (args.server or name), **result.to_dict()}
    report.pop("episodes")
    sections = [result.markdown(f"Closed-loop evaluation: {name}")]
    if args.reference is not None:
        from kivla.eval.language import language_retention, markdown
        from kivla.model.bundle import PolicyBundle

        report["language"] = language_retention(bundle, PolicyBundle.load(args.reference))
        sections.append(markdown(report["language"]))
    if args.data is not None:
        from kivla.eval.validation import flow_validation

        report["flow_validation"] = flow_validation(bundle, args.data)
        sections.append(
            f"## Flow validation\n\nMSE (normalized units) {report['flow_validation']['mse']:.4g} "
            f"over {report['flow_validation']['frames']} frames of {args.data}\n"
        )
    from kivla.eval.rollout import _write_text
    from kivla.train.atomic import write_json

    write_json(out / "report.json", report)
    _write_text(out / "report.md", "\n".join(sections))
    if args.json:
        print(json.dumps(report))
    else:
        print("\n".join(sections))
        print(f"written: {out}/report.json, report.md, eval.json" + (", videos/" if result.videos else ""))
    return 0


def run_study_command(args: argparse.Namespace) -> int:
    from kivla.eval.study import StudyConfig, run_study

    if args.study == "language":  # the real SmolLM2 backbone (kivla.eval.language_study)
        from kivla.eval.language_study import LanguageStudyConfig, run_language_study

        steps = {"steps": args.steps} if args.steps is not None else {}
        variants = {"recipes": tuple(args.variants)} if args.variants else {}
        print(
            run_language_study(LanguageStudyConfig(work=args.work, report=args.report, **steps, **variants))
        )
        return 0

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
