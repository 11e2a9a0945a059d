"""`kivla tokenizer fit` and `kivla tokenizer report`: fit a tokenizer on chunks, compare kinds."""

from __future__ import annotations

import argparse
import json

KINDS = ("fast", "binning", "wavelet", "vq")  # the registry's names; kept here so --help stays light


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenizer", help="fit action tokenizers and report rate-distortion")
    commands = parser.add_subparsers(dest="tokenizer_command", metavar="<subcommand>", required=True)

    fit = commands.add_parser("fit", help="fit one tokenizer and save it (tokenizer.json + model files)")
    _add_data_args(fit)
    fit.add_argument("--kind", choices=KINDS, default="fast")
    fit.add_argument("--out", required=True, help="directory to save the tokenizer in")
    fit.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config field, e.g. vocab_size=2048"
    )
    fit.set_defaults(func=run_fit)

    report = commands.add_parser("report", help="fit each kind on chunks and print tokens/error/speed")
    _add_data_args(report)
    report.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    report.add_argument("--holdout", type=float, default=0.2, help="share of chunks kept for evaluation")
    report.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KIND.KEY=VALUE",
        help="config field, e.g. fast.scale=20",
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.set_defaults(func=run_report)


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", help="a .npz with an array 'chunks' [N, H, D] or a LeRobot dataset dir")
    source.add_argument("--synthetic", type=int, metavar="N", help="use N smooth synthetic chunks instead")
    parser.add_argument("--horizon", type=int, default=50, help="chunk length H (synthetic / LeRobot)")
    parser.add_argument("--action-dim", type=int, default=7, help="action dimension D (synthetic only)")
    parser.add_argument("--max-chunks", type=int, default=None, help="evenly spaced subset of the data")
    parser.add_argument("--seed", type=int, default=0)


def _chunks(args: argparse.Namespace, default_synthetic: int | None):
    from kivla.data.chunks import load_chunks
    from kivla.tokenizers.synthetic import smooth_chunks

    if args.data is not None:
        return load_chunks(args.data, horizon=args.horizon, max_chunks=args.max_chunks)
    count = args.synthetic if args.synthetic is not None else default_synthetic
    if count is None:
        raise ValueError("--data: give a .npz / LeRobot dataset, or --synthetic N for generated chunks")
    if count < 2:
        raise ValueError(f"--synthetic: expected at least 2 chunks, got {count}")
    return smooth_chunks(count, horizon=args.horizon, action_dim=args.action_dim, seed=args.seed)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as a wavelet name


def _parse_sets(items: list[str]) -> dict[str, object]:
    config = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        config[key] = _value(value)
    return config


def run_fit(args: argparse.Namespace) -> int:
    from kivla.tokenizers import fit_tokenizer
    from kivla.tokenizers.evaluate import evaluate

    chunks = _chunks(args, default_synthetic=None)
    try:
        tokenizer = fit_tokenizer(args.kind, chunks, **_parse_sets(args.set))
    except TypeError as err:  # an unknown config field
        raise ValueError(f"--set: {err}") from None
    tokenizer.save(args.out)
    r = evaluate(tokenizer, chunks[: min(len(chunks), 2000)])
    print(
        f"saved {tokenizer!r} to {args.out} (fit on {len(chunks)} chunks); on the fit data: "
        f"{r.tokens_mean:.1f} tokens/chunk, RMSE {r.rmse:.4f}, max abs {r.max_abs:.4f}"
    )
    return 0


def run_report(args: argparse.Namespace) -> int:
    from kivla.tokenizers.evaluate import fit_and_evaluate, markdown_table

    chunks = _chunks(args, default_synthetic=5000)
    configs: dict[str, dict] = {}
    for key, value in _parse_sets(args.set).items():
        kind, dot, field = key.partition(".")
        if not dot or kind not in KINDS:
            raise ValueError(f"--set: expected KIND.KEY=VALUE with KIND in {KINDS}, got {key!r}")
        configs.setdefault(kind, {})[field] = value
    try:
        reports = fit_and_evaluate(args.kinds, chunks, holdout=args.holdout, configs=configs, seed=args.seed)
    except TypeError as err:
        raise ValueError(f"--set: {err}") from None
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        n, h, d = chunks.shape
        print(
            f"{n} chunks [{h}×{d}], fit on {1 - args.holdout:.0%}, evaluated on the rest (normalized units)"
        )
        print(markdown_table(reports))
    return 0
