"""`train_policy` with strategy fsdp on 2 gloo processes: the losses of one process, a checkpoint
that loads as a policy bundle, and a resume that continues the run."""

import dataclasses

import numpy as np
import torch

from kivla.data.world_dataset import generate_dataset
from kivla.model.bundle import PolicyBundle
from kivla.train.checkpoint import list_checkpoints
from kivla.train.config import TrainConfig
from kivla.train.distributed import init_distributed, shutdown_distributed
from kivla.train.metrics import read_metrics
from kivla.train.mixture import MixtureConfig
from kivla.train.run import RunConfig, train_policy
from kivla.train.testing import run_ranks


def config(data, out, **train):
    train = TrainConfig(
        steps=3,
        batch_size=8,
        warmup_steps=0,
        log_every=1,
        save_every=3,
        ema_decay=None,
        strategy="fsdp",
        precision="fp32",
        **train,
    )  # fmt: skip  (exact: no bf16)
    mixture = MixtureConfig(robot=0.6, caption=0.1, vqa=0.2, text=0.1)
    return RunConfig(recipe="ki", data=data, out=out, size="test", horizon=8, tokenizer_fit_chunks=200,
                     mixture=mixture, train=train)  # fmt: skip


def _train_on_rank(data, out):
    ctx = init_distributed("cpu")
    try:
        # Stop after 2 of the 3 steps, then resume from that FSDP checkpoint.
        train_policy(config(data, out, stop_at=2), progress=False, ctx=ctx)
        train_policy(config(data, out), progress=False, resume=True, ctx=ctx)
    finally:
        shutdown_distributed()


def test_fsdp_two_processes_match_one_and_resume(tmp_path, single_process):
    data = generate_dataset(tmp_path / "data", episodes=4, image_size=32, seed=5, progress=False)
    single = train_policy(config(data, tmp_path / "single"), progress=False)
    run_ranks(_train_on_rank, data, tmp_path / "fsdp")
    fsdp = read_metrics(tmp_path / "fsdp" / "metrics.jsonl")
    assert [r["step"] for r in fsdp] == [r["step"] for r in single.history] == [1, 2, 3]
    for a, b in zip(single.history, fsdp, strict=True):
        for key in ("loss", "loss/flow", "loss/fast", "loss/lm", "grad_norm"):
            assert np.isclose(a[key], b[key], rtol=1e-4, atol=1e-6), (key, a[key], b[key])
    checkpoints = list_checkpoints(tmp_path / "fsdp" / "checkpoints")
    assert [c.name for c in checkpoints] == ["step_00000002", "step_00000003"]
    loaded = PolicyBundle.load(checkpoints[-1], weights="model")
    reference = PolicyBundle.load(single.checkpoints[-1], weights="model")
    theirs = reference.policy.state_dict()
    for name, value in loaded.policy.state_dict().items():
        assert torch.allclose(value, theirs[name], atol=1e-5), name
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(reference.config)
