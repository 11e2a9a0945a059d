"""`kivla eval --env metaworld`: a policy, the scripted expert or random actions on Meta-World tasks."""

from __future__ import annotations

import argparse
from pathlib import Path

BASELINES = ("expert", "random")  # `--policy` names that are not paths


def add_arguments(ev: argparse.ArgumentParser) -> None:
    mw = ev.add_argument_group("Meta-World (--env metaworld)")
    mw.add_argument(
        "--tasks", default="mt10", help="suites (mt10, mt50, easy, medium, hard, very_hard) and/or "
        "task names, comma-separated (default mt10)",
    )  # fmt: skip
    mw.add_argument("--camera", default="corner4", help="Meta-World camera (default corner4)")
    mw.add_argument(
        "--image-size",
        type=int,
        default=128,
        help="rendered side for expert / random (a policy uses its own)",
    )
    mw.add_argument(
        "--benchmark-seed", type=int, default=None, help="Meta-World seed of the 50 configurations per task "
        "(default 1; datasets default to 0)",
    )  # fmt: skip


def run_metaworld_eval(args: argparse.Namespace) -> int:
    import json

    from kivla.eval.metaworld_rollout import EVAL_SEED, MetaWorldEvalConfig, evaluate_metaworld
    from kivla.io import write_json, write_text

    policy, name, image_size, bundle = _policy(args)
    episodes = 10 if args.episodes is None else args.episodes
    config = MetaWorldEvalConfig(
        tasks=args.tasks,
        episodes=episodes,
        num_envs=min(args.num_envs, episodes),
        execute_steps=args.execute_steps,
        max_steps=500 if args.max_steps is None else args.max_steps,
        image_size=image_size,
        camera=args.camera,
        seed=EVAL_SEED if args.benchmark_seed is None else args.benchmark_seed,
        videos=args.videos,
    )
    out = args.out or Path("runs/eval") / f"metaworld_{name}"
    try:
        result = evaluate_metaworld(policy, config, out_dir=out, progress=not args.json)
    finally:
        if args.server:
            policy.close()
    report = {"policy": str(args.policy) if bundle else (args.server or name), "env": "metaworld"}
    report |= result.to_dict()
    report.pop("episodes")
    sections = [result.markdown(f"Meta-World closed-loop evaluation: {name}")]
    if args.reference is not None or args.data is not None:
        if bundle is None:
            raise ValueError(
                "--reference / --data: need --policy PATH (the baselines and --server have no backbone)"
            )
        if args.reference is not None:
            from kivla.eval.language import language_retention, markdown
            from kivla.model.bundle import PolicyBundle

            report["language"] = language_retention(bundle, PolicyBundle.load(args.reference))
            sections.append(markdown(report["language"]))
        if args.data is not None:
            from kivla.eval.validation import flow_validation

            report["flow_validation"] = flow_validation(bundle, args.data)
            sections.append(
                f"## Flow validation\n\nMSE (normalized units) {report['flow_validation']['mse']:.4g}\n"
            )
    write_json(out / "report.json", report)
    write_text(out / "report.md", "\n".join(sections))
    if args.json:
        print(json.dumps(report))
    else:
        print("\n".join(sections))
        timing = result.timing()
        print(
            f"{len(result.episodes)} episodes in {timing['seconds']:.1f} s "
            f"({timing['seconds_per_episode']:.2f} s/episode)"
        )
        print(f"written: {out}/report.json, report.md, eval.json" + (", videos/" if result.videos else ""))
    return 0


def _policy(args: argparse.Namespace):
    """(policy, name, image size, bundle or None) from --policy / --server / --oracle / --random."""
    from kivla.eval.metaworld_baselines import MetaWorldExpertPolicy, MetaWorldRandomPolicy, check_bundle

    choice = str(args.policy) if args.policy is not None else None
    if args.oracle or choice == "expert":
        return MetaWorldExpertPolicy(), "expert", args.image_size, None
    if args.random or choice == "random":
        return MetaWorldRandomPolicy(seed=args.seed), "random", args.image_size, None
    if args.server:
        import os

        from kivla.serve.client import ServerPolicy

        policy = ServerPolicy(
            args.server, seed=args.seed, api_key=args.api_key or os.environ.get("KIVLA_API_KEY")
        )
        return policy, f"server_{policy.name}", policy.image_size, None
    from kivla.eval.baselines import BundlePolicy
    from kivla.model.bundle import PolicyBundle
    from kivla.train.checkpoint import resolve_policy_dir

    path = resolve_policy_dir(args.policy)
    bundle = PolicyBundle.load(path)
    check_bundle(bundle)
    args.policy = path
    name = f"{path.parent.parent.name}_{path.name}" if path.parent.name == "checkpoints" else path.name
    return BundlePolicy(bundle, seed=args.seed), name, bundle.builder.image_size, bundle
