"""`kivla audit`: per-loss gradient norms on each module group for a recipe."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from kivla.model.presets import RECIPES  # light: dataclasses only

    audit = subparsers.add_parser(
        "audit",
        help="gradient norm of each loss (flow, fast, lm) on each module group, for a recipe",
        description="Runs one synthetic batch through a policy (freshly initialized, or the weights of "
        "--checkpoint under the routing of --recipe) and prints, for each loss, the gradient norm on "
        "the backbone body, the embeddings / LM head and the expert.",
    )
    audit.add_argument("--recipe", required=True, choices=sorted(r.name for r in RECIPES if r.trains_actions))
    audit.add_argument("--json", action="store_true", help="print one JSON object")
    audit.add_argument(
        "--size",
        choices=("tiny", "test"),
        default="tiny",
        help="tiny: the default tiny VLM (about 5M parameters); test: the unit-test size",
    )
    audit.add_argument("--batch-size", type=int, default=8)
    audit.add_argument("--num-language", type=int, default=2, help="language (LM-only) examples in the batch")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument(
        "--checkpoint", help="a policy bundle or training checkpoint directory (policy.json + weights)"
    )
    audit.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    import json

    import torch

    from kivla.model.audit import GROUPS, gradient_audit
    from kivla.model.bundle import PolicyBundle
    from kivla.model.policy import KIPolicy
    from kivla.model.presets import recipe_config, tiny_test_config
    from kivla.model.synthetic import synthetic_batch

    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {args.batch_size}")
    torch.manual_seed(args.seed)
    if args.checkpoint:
        trained = PolicyBundle.load(args.checkpoint, weights="model").policy
        config = recipe_config(args.recipe, trained.config)
        policy = KIPolicy(config)
        policy.load_state_dict(trained.state_dict())
    else:
        config = recipe_config(args.recipe, tiny_test_config() if args.size == "test" else None)
        policy = KIPolicy(config)
    prompt_len = 8 if config.backbone.width < 64 else 32
    batch = synthetic_batch(
        config, args.batch_size, prompt_len=prompt_len, num_language=args.num_language, seed=args.seed
    )
    report = gradient_audit(policy, batch, seed=args.seed)
    if args.json:
        print(json.dumps(report))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gradient norms, recipe {args.recipe!r} (one batch of {args.batch_size})")
    table.add_column("loss")
    for group in GROUPS:
        table.add_column(group, justify="right")
    for loss, norms in report.items():
        table.add_row(loss, *(f"{norms[g]:.3g}" if norms[g] else "0.0" for g in GROUPS))
    Console().print(table)
    return 0
