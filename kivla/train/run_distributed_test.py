"""`train_policy` under 2 gloo processes gives the losses of one process on the same global batch."""

import numpy as np
import pytest

from kivla.data.world_dataset import generate_dataset
from kivla.train.config import TrainConfig
from kivla.train.distributed import init_distributed, shutdown_distributed
from kivla.train.metrics import read_metrics
from kivla.train.mixture import MixtureConfig
from kivla.train.run import RunConfig, train_policy
from kivla.train.testing import run_ranks


def config(data, out, backbone_every=1):
    # fp32: equality with one process is exact only without bf16 rounding.
    train = TrainConfig(steps=3, batch_size=8, warmup_steps=0, log_every=1, save_every=3, ema_decay=None,
                        precision="fp32")  # fmt: skip
    mixture = MixtureConfig(robot=0.6, caption=0.1, vqa=0.2, text=0.1)
    return RunConfig(recipe="ki", data=data, out=out, size="test", horizon=8, tokenizer_fit_chunks=200,
                     mixture=mixture, train=train, backbone_every=backbone_every)  # fmt: skip


def _train_on_rank(data, out, backbone_every):
    ctx = init_distributed("cpu")
    try:
        train_policy(config(data, out, backbone_every), progress=False, ctx=ctx)
    finally:
        shutdown_distributed()


@pytest.mark.parametrize("backbone_every", [1, 2])
def test_two_processes_match_one(tmp_path, single_process, backbone_every):
    """Also with expert steps between the backbone's (step 1 of 3 with backbone_every=2), where DDP
    sees the backbone's parameters unused."""
    data = generate_dataset(tmp_path / "data", episodes=4, image_size=32, seed=5, progress=False)
    train_policy(config(data, tmp_path / "single", backbone_every), progress=False)
    run_ranks(_train_on_rank, data, tmp_path / "ddp", backbone_every)
    single = read_metrics(tmp_path / "single" / "metrics.jsonl")
    ddp = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert len(single) == len(ddp) == 3
    for a, b in zip(single, ddp, strict=True):
        assert set(a) == set(b)
        for key in ("loss", "loss/flow", "loss/fast", "loss/lm", "grad_norm"):
            if key in a:
                assert np.isclose(a[key], b[key], rtol=1e-4, atol=1e-6), (key, a[key], b[key])
    assert ["loss/fast" in r for r in ddp] == [True, backbone_every == 1, True]
