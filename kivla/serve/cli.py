"""`kivla serve`: a policy over openpi's websocket protocol (docs/serving.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from kivla.serve.server import API_KEY_ENV, DEFAULT_PORT

    sv = subparsers.add_parser(
        "serve",
        help="serve a policy over openpi's websocket + msgpack protocol (openpi-client drives it)",
        description="Loads a policy (a bundle or checkpoint directory; a run directory: its latest "
        "checkpoint) and serves it on ws://HOST:PORT with openpi's protocol: metadata on connect, then "
        "one msgpack observation frame in, one action chunk out, with dynamic batching of concurrent "
        "clients. GET /healthz answers 200. See docs/serving.md.",
    )
    sv.add_argument("--policy", type=Path, required=True, help="bundle, checkpoint or run directory")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT)
    sv.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"refuse connections without 'Authorization: Api-Key KEY' (default: ${API_KEY_ENV})",
    )
    sv.add_argument("--max-batch", type=int, default=16, help="observations sampled together (1: off)")
    sv.add_argument(
        "--batch-window-ms", type=float, default=2.0, help="how long a batch waits for other clients"
    )
    sv.add_argument("--max-frame-mb", type=float, default=4.0, help="largest client frame accepted")
    sv.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="NAME=KEY",
        help="observation key names, NAME in image/state/prompt "
        "(default image=observation/image state=observation/state prompt=prompt)",
    )
    sv.add_argument("--num-steps", type=int, default=10, help="Euler steps of flow sampling")
    sv.add_argument("--fps", type=int, default=10, help="control rate reported in the metadata")
    sv.add_argument("--seed", type=int, default=0, help="noise seed for requests without their own")
    sv.add_argument("--weights", choices=("auto", "ema", "model"), default="auto")
    sv.add_argument(
        "--keypoint-peak", type=int, default=None, metavar="R",
        help="as `kivla eval --keypoint-peak` (default: the policy's ExpertConfig.keypoint_peak)",
    )  # fmt: skip
    sv.add_argument("--device", default="cpu")
    sv.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    sv.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import logging

    from kivla.model.bundle import PolicyBundle
    from kivla.serve.observation import ObservationKeys
    from kivla.serve.server import PolicyServer, ServeConfig
    from kivla.train.checkpoint import resolve_policy_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads: expected >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    config = ServeConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        max_frame_bytes=int(args.max_frame_mb * 2**20),
        num_steps=args.num_steps,
        seed=args.seed,
        fps=args.fps,
        keys=ObservationKeys.parse(args.key),
    )
    bundle = PolicyBundle.load(resolve_policy_dir(args.policy), weights=args.weights, device=args.device)
    if args.keypoint_peak is not None:
        bundle.set_keypoint_peak(args.keypoint_peak)
    try:
        PolicyServer(bundle, config).run()
    except KeyboardInterrupt:
        pass
    return 0
