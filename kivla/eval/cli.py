"""`kivla eval`: closed loop + language + flow validation of one policy."""

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
    ev.add_argument(
        "--env",
        choices=("world", "metaworld"),
        default="world",
        help="the built-in world (default) or Meta-World (`--policy expert|random|PATH`; docs/metaworld.md)",
    )
    ev.add_argument(
        "--episodes",
        type=int,
        help="world: episodes per split, spread over the families (default 40); metaworld: per task (10)",
    )
    ev.add_argument("--split", choices=("train", "ood", "both"), default="both")
    ev.add_argument("--out", type=Path, help="output directory (default runs/eval/<policy name>)")
    ev.add_argument("--reference", type=Path, help="pretrained bundle: report language retention against it")
    ev.add_argument("--data", type=Path, help="held-out LeRobot dataset: report the flow validation MSE")
    ev.add_argument("--num-envs", type=int, default=16)
    ev.add_argument(
        "--execute-steps", type=int, default=10, help="actions executed per chunk before replanning"
    )
    ev.add_argument("--max-steps", type=int, help="episode step limit (default: world 200, metaworld 500)")
    ev.add_argument("--videos", type=int, default=2, help="GIF rollouts saved per split")
    ev.add_argument(
        "--keypoint-peak", type=int, default=None, metavar="R",
        help="read the policy's keypoints 0 / 1 as a soft-argmax over the tokens within R grid cells "
        "of their peak (-1: the plain spatial softmax; default: the policy's ExpertConfig.keypoint_peak)",
    )  # fmt: skip
    ev.add_argument(
        "--weights", choices=("auto", "ema", "model"), default="auto",
        help="the policy's weights: its EMA when it has them (auto), the EMA, or the raw weights",
    )  # fmt: skip
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--api-key", help="with --server: its API key (default: $KIVLA_API_KEY)")
    ev.add_argument("--json", action="store_true", help="print the results as one JSON object")
    from kivla.eval.metaworld_cli import add_arguments

    add_arguments(ev)
    ev.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    import json

    from kivla.data.world_env import is_privileged_state_dim
    from kivla.eval.baselines import BundlePolicy, OraclePolicy, RandomPolicy
    from kivla.eval.rollout import EvalConfig, evaluate

    if args.env == "metaworld":
        from kivla.eval.metaworld_cli import run_metaworld_eval

        return run_metaworld_eval(args)
    args.episodes = 40 if args.episodes is None else args.episodes
    args.max_steps = 200 if args.max_steps is None else args.max_steps
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
        from kivla.train.checkpoint import resolve_policy_dir

        path = resolve_policy_dir(args.policy)
        bundle = PolicyBundle.load(path, weights=args.weights)
        if args.keypoint_peak is not None:
            bundle.set_keypoint_peak(args.keypoint_peak)
        policy = BundlePolicy(bundle, seed=args.seed)
        name = f"{path.parent.parent.name}_{path.name}" if path.parent.name == "checkpoints" else path.name
        image_size = bundle.builder.image_size
    # A policy trained on a privileged-state dataset (`kivla world generate --privileged-state`)
    # is evaluated with the same state.
    privileged = bundle is not None and is_privileged_state_dim(bundle.builder.state_dim)
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
        privileged_state=privileged,
    )
    out = args.out or Path("runs/eval") / name
    try:
        result = evaluate(policy, config, out_dir=out)
    finally:
        if args.server:
            policy.close()
    report = {"policy": str(path) if bundle else (args.server or name), **result.to_dict()}
    if bundle is not None and bundle.policy.expert.keypoints is not None:
        report["keypoint_peak"] = bundle.policy.expert.keypoints.peak
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
    from kivla.io import write_json, write_text

    write_json(out / "report.json", report)
    write_text(out / "report.md", "\n".join(sections))
    if args.json:
        print(json.dumps(report))
    else:
        print("\n".join(sections))
        print(f"written: {out}/report.json, report.md, eval.json" + (", videos/" if result.videos else ""))
    return 0
