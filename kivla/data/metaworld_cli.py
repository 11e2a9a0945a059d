"""`kivla metaworld generate`: scripted-expert Meta-World episodes as a LeRobot v3 dataset."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    mw = subparsers.add_parser(
        "metaworld", help="Meta-World (MuJoCo): generate datasets (pip install 'kivla[metaworld]')"
    )
    sub = mw.add_subparsers(dest="metaworld_command", metavar="<subcommand>")
    gen = sub.add_parser(
        "generate",
        help="write scripted-expert episodes (successful ones) as a LeRobot v3 dataset",
        description="Runs Meta-World's scripted experts and writes their successful episodes, with "
        "kivla's instruction of each task, as a LeRobot v3 dataset (image, 4-d end-effector state, "
        "4-d action) that `kivla train --data` reads.",
    )
    gen.add_argument(
        "--tasks", default="mt10", help="suites (mt10, mt50, easy, medium, hard, very_hard) and/or task "
        "names, comma-separated (default mt10)",
    )  # fmt: skip
    gen.add_argument("--episodes", type=int, required=True, help="successful episodes per task")
    gen.add_argument("--out", required=True, help="dataset folder to create")
    gen.add_argument("--image-size", type=int, default=128, help="square image side, 32..256 (default 128)")
    gen.add_argument("--camera", default="corner4", help="Meta-World camera (default corner4)")
    gen.add_argument("--seed", type=int, default=0, help="Meta-World benchmark seed (the 50 configurations)")
    gen.add_argument("--max-steps", type=int, default=500, help="expert step limit per episode, 1..500")
    gen.add_argument(
        "--no-video", action="store_true", help="store PNG images in the parquet files instead of MP4"
    )
    gen.add_argument(
        "--codec", default="libx264", choices=("libx264", "libsvtav1", "mpeg4"), help="video encoder"
    )
    gen.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    gen.set_defaults(func=_generate)
    mw.set_defaults(func=lambda args: mw.print_help())


def _generate(args: argparse.Namespace) -> int:
    import time

    from kivla.data.metaworld_env import MetaWorldConfig
    from kivla.data.metaworld_tasks import resolve_tasks

    tasks = resolve_tasks(args.tasks)
    config = MetaWorldConfig(
        image_size=args.image_size, camera=args.camera, max_steps=args.max_steps, seed=args.seed
    )
    from kivla.data.metaworld_dataset import generate_metaworld_dataset

    start = time.perf_counter()
    path = generate_metaworld_dataset(
        args.out, tasks, args.episodes, config, video=not args.no_video, overwrite=args.overwrite,
        video_codec=args.codec,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    total = args.episodes * len(tasks)
    print(
        f"wrote {total} episodes ({len(tasks)} tasks) to {path} in {seconds:.1f} s "
        f"({seconds / total:.2f} s/episode)"
    )
    return 0
