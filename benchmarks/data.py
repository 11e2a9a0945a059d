"""Data benchmark: world generation frames/s, expert success, loader samples/s, mixture examples/s.

The loader must not bottleneck training: the reference training step (DESIGN.md §7) takes about
0.85 s per batch of 32, i.e. ~38 samples/s, so the loader target is >= 5x that (~190 samples/s).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.report import write_section

TRAIN_SAMPLES_PER_S = 32 / 0.85
EPISODES = 100
BATCH = 32


def _generation(root: Path, video: bool) -> tuple[float, int]:
    from kivla.data.world_dataset import generate_dataset

    start = time.perf_counter()
    generate_dataset(root, EPISODES, seed=0, video=video, progress=False)
    seconds = time.perf_counter() - start
    from kivla.data.lerobot_read import LeRobotDataset

    frames = len(LeRobotDataset(root, horizon=1))
    return frames / seconds, frames


def _loader(root: Path, workers: int, batches: int = 40) -> tuple[float, float]:
    """(cold, warm) samples/s of shuffled batches of 32 through a DataLoader."""
    from kivla.data.lerobot_read import LeRobotDataset

    ds = LeRobotDataset(root, horizon=50)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=workers > 0,
    )
    rates = []
    for _ in range(2):  # first pass: cold episode caches (includes decoding); second: warm
        start, n = time.perf_counter(), 0
        for i, batch in enumerate(loader):
            n += len(batch["actions"])
            if i + 1 >= batches:
                break
        rates.append(n / (time.perf_counter() - start))
    return rates[0], rates[1]


def _expert_success(seeds: int = 200) -> dict[tuple[str, str], tuple[float, float]]:
    from kivla.data.world_env import TabletopEnv, WorldConfig
    from kivla.data.world_expert import rollout_expert
    from kivla.data.world_tasks import FAMILIES

    out = {}
    for split in ("train", "ood"):
        env = TabletopEnv(WorldConfig(split=split))
        for family in FAMILIES:
            eps = [rollout_expert(env, 50_000 + s, {"family": family}) for s in range(seeds)]
            out[(family, split)] = (
                float(np.mean([e["success"] for e in eps])),
                float(np.mean([len(e["actions"]) for e in eps])),
            )
    return out


def _mixture(root: Path, n: int = 2000) -> float:
    from kivla.data.lerobot_read import LeRobotDataset
    from kivla.data.mixture import MixtureSampler

    sampler = MixtureSampler(
        LeRobotDataset(root, horizon=50), {"robot": 0.5, "caption": 0.2, "vqa": 0.2, "text": 0.1}
    )
    sampler.sample(200)
    start = time.perf_counter()
    sampler.sample(n)
    return n / (time.perf_counter() - start)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        video_root, png_root = Path(tmp) / "video", Path(tmp) / "png"
        gen_video, frames = _generation(video_root, video=True)
        gen_png, _ = _generation(png_root, video=False)
        loaders = {
            (name, w): _loader(root, w)
            for name, root in (("mp4", video_root), ("png", png_root))
            for w in (0, 2)
        }
        mixture = _mixture(video_root)
    success = _expert_success()

    lines = [
        "## data",
        "",
        f"`python -m benchmarks data`. World: {EPISODES} scripted-expert episodes ({frames} frames), "
        "64×64 images.",
        "",
        "| generation | frames/s |",
        "|---|---|",
        f"| LeRobot v3, MP4 (libx264) | {gen_video:,.0f} |",
        f"| LeRobot v3, PNG in parquet (`--no-video`) | {gen_png:,.0f} |",
        "",
        f"Loader: `LeRobotDataset(horizon=50)`, shuffled batches of {BATCH} through a torch DataLoader "
        "(40 batches; cold = fresh episode cache, warm = second pass). Training consumes "
        f"{TRAIN_SAMPLES_PER_S:.0f} samples/s (0.85 s a batch of 32, DESIGN.md §7); target ≥ 5×.",
        "",
        "| images | workers | cold samples/s | warm samples/s | cold ÷ training | warm ÷ training |",
        "|---|---|---|---|---|---|",
    ]
    for (name, workers), (cold, warm) in loaders.items():
        ratio = f"{cold / TRAIN_SAMPLES_PER_S:.0f}× | {warm / TRAIN_SAMPLES_PER_S:.0f}×"
        lines.append(f"| {name} | {workers} | {cold:,.0f} | {warm:,.0f} | {ratio} |")
    lines += [
        "",
        "Mixture sampler (robot 0.5 / caption 0.2 / vqa 0.2 / text 0.1, normalized): "
        f"{mixture:,.0f} examples/s.",
        "",
        "Expert success over 200 seeds per family and split (mean episode length in steps):",
        "",
        "| family | train | ood |",
        "|---|---|---|",
    ]
    for family in dict.fromkeys(f for f, _ in success):
        tr, ood = success[(family, "train")], success[(family, "ood")]
        lines.append(f"| {family} | {tr[0]:.1%} ({tr[1]:.0f}) | {ood[0]:.1%} ({ood[1]:.0f}) |")
    body = "\n".join(lines)
    print(body)
    write_section("data", body)


if __name__ == "__main__":
    main()
