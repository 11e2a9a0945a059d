"""`kivla world ...`: generate a LeRobot v3 dataset from the built-in world, or summarize one."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    world = subparsers.add_parser("world", help="the built-in world: generate or inspect datasets")
    sub = world.add_subparsers(dest="world_command", metavar="<subcommand>")

    gen = sub.add_parser("generate", help="write scripted-expert episodes as a LeRobot v3 dataset")
    gen.add_argument("--episodes", type=int, required=True, help="number of (successful) episodes")
    gen.add_argument("--out", required=True, help="dataset folder to create")
    gen.add_argument("--image-size", type=int, default=64, help="square image side, 32..256 (default 64)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--no-video", action="store_true", help="store PNG images in the parquet files instead of MP4"
    )
    gen.add_argument(
        "--codec",
        default="libx264",
        choices=("libx264", "libsvtav1", "mpeg4"),
        help="video encoder (PyAV's FFmpeg)",
    )
    gen.add_argument("--split", choices=("train", "ood"), default="train", help="task compositions to draw")
    gen.add_argument("--families", nargs="+", default=None, help="task families (default: all)")
    gen.add_argument(
        "--frames-per-file", type=int, default=100_000, help="roll data/video files after this many frames"
    )
    gen.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    gen.add_argument(
        "--privileged-state",
        action="store_true",
        help="append the target's and goal's xy to the state (a diagnostic: perfect perception)",
    )
    gen.set_defaults(func=_generate)

    show = sub.add_parser("show", help="summarize a LeRobot v3 dataset")
    show.add_argument("--data", required=True, help="dataset folder")
    show.add_argument("--horizon", type=int, default=50)
    show.set_defaults(func=_show)
    world.set_defaults(func=lambda args: world.print_help())


def _generate(args: argparse.Namespace) -> int:
    from kivla.data.world_dataset import generate_dataset
    from kivla.data.world_tasks import FAMILIES

    path = generate_dataset(
        args.out,
        episodes=args.episodes,
        image_size=args.image_size,
        seed=args.seed,
        video=not args.no_video,
        split=args.split,
        families=tuple(args.families) if args.families else FAMILIES,
        frames_per_file=args.frames_per_file,
        overwrite=args.overwrite,
        video_codec=args.codec,
        privileged_state=args.privileged_state,
    )
    print(f"wrote {args.episodes} episodes to {path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from collections import Counter

    from kivla.data.lerobot_read import LeRobotDataset

    ds = LeRobotDataset(args.data, horizon=args.horizon)
    info = ds.info
    lengths = [ds.episode_rows(int(e))[1] - ds.episode_rows(int(e))[0] for e in ds.episodes["episode_index"]]
    print(f"dataset       {ds.root}  (LeRobot {info['codebase_version']}, {info.get('robot_type')})")
    print(f"episodes      {ds.num_episodes}, frames {len(ds)}, fps {ds.fps:g}, tasks {len(ds.tasks)}")
    print(f"episode len   min {min(lengths)}, mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}")
    print(f"action        dim {ds.action_dim}  names {info['features'][ds.action_key].get('names')}")
    print(f"state         dim {ds.state_dim}  names {info['features'][ds.state_key].get('names')}")
    if ds.image_key:
        feature = info["features"][ds.image_key]
        print(f"image         {ds.image_key}  {feature['dtype']}  shape {feature['shape']}")
    stats = ds.stats.get(ds.action_key, {})
    if stats:
        print(f"action q01    {[round(v, 3) for v in stats['q01']]}")
        print(f"action q99    {[round(v, 3) for v in stats['q99']]}")
    from kivla.data.world_tasks import parse_instruction

    parsed = [parse_instruction(ds.tasks[int(t)]) for t in ds.task_index[ds._ep_start]]
    families = Counter(p[2] if p else "other" for p in parsed)
    print(f"task families {dict(families.most_common())}")
    print(f"example task  {ds.tasks[int(ds.task_index[0])]!r}")
    return 0
