"""FSDP (FSDP2 on 2 gloo processes) gives the losses and weights of one process, and resumes."""

import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from kivla.train.config import TrainConfig
from kivla.train.distributed import DistContext, fsdp_blocks, init_distributed, shutdown_distributed
from kivla.train.loop import Trainer
from kivla.train.metrics import read_metrics
from kivla.train.testing import run_ranks

GLOBAL_BATCH, STEPS = 8, 6
NAN_STEP = 1  # the second step sees a NaN input and is skipped


@dataclass
class Out:
    total: torch.Tensor
    parts: dict


class Blocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))


class Toy(torch.nn.Module):
    """Two sharded blocks and a head. Examples flagged `insulated` reach the head through a detached
    backbone output: rank 1's half of the batch is all insulated, so on that rank the blocks get no
    gradient from the loss, as a KI backbone on a micro-batch of robot examples only."""

    def __init__(self):
        super().__init__()
        self.backbone = Blocks()
        self.head = torch.nn.Linear(4, 3)

    def forward(self, batch):
        x, y, insulated = batch
        for layer in self.backbone.layers:
            x = torch.tanh(layer(x))
        if insulated.all():
            x = x.detach()
        elif insulated.any():
            x = torch.where(insulated[:, None], x.detach(), x)
        mse = ((self.head(x) - y) ** 2).mean()
        return Out(total=mse, parts={"mse": mse.detach()})


def shard(step, micro, rank, world, n):
    """This rank's slice of (micro-step, rank) of the same global batch every step."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(GLOBAL_BATCH, 4, generator=g), torch.randn(GLOBAL_BATCH, 3, generator=g)
    insulated = torch.arange(GLOBAL_BATCH) >= GLOBAL_BATCH // 2
    if step == NAN_STEP:  # only rank 1's half: the ranks must still agree to skip the step
        x[GLOBAL_BATCH // 2 :] = float("nan")
    rows = slice((micro * world + rank) * n, (micro * world + rank + 1) * n)
    return x[rows], y[rows], insulated[rows]


def config(**kw):
    base = dict(
        steps=STEPS,
        batch_size=GLOBAL_BATCH,
        grad_accum=1,
        lr=0.05,
        warmup_steps=2,
        log_every=1,
        save_every=3,
        ema_decay=None,
        strategy="fsdp",
        precision="fp32",
    )  # fmt: skip  (exact equality needs no bf16 rounding)
    return TrainConfig(**{**base, **kw})


def train(run_dir, ctx, resume=False, **kw):
    torch.manual_seed(0)
    trainer = Trainer(Toy(), config(**kw), shard, run_dir, ctx=ctx, progress=False)
    trainer.fit(resume=resume)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(trainer.wrapped, options=options)
    if ctx.is_main:
        (run_dir / "weights.json").write_text(json.dumps({k: v.tolist() for k, v in full.items()}))
    return trainer


def _train_on_rank(root):
    ctx = init_distributed("cpu")
    try:
        trainer = train(root / "fsdp", ctx)
        # Parameters really are sharded: each rank holds half of a block's weight rows.
        weight = trainer.model.backbone.layers[0].weight
        assert weight.to_local().shape == (2, 4) and weight.full_tensor().shape == (4, 4)
        train(root / "fsdp_accum", ctx, grad_accum=2)
        train(root / "split", ctx, stop_at=3)
        train(root / "split", ctx, resume=True)
    finally:
        shutdown_distributed()


def _weights(path):
    return {k: torch.tensor(v) for k, v in json.loads((path / "weights.json").read_text()).items()}


def _records(path):
    return [r for r in read_metrics(path / "metrics.jsonl") if "loss" in r]  # not the skip notices


def _losses(path):
    return [r["loss"] for r in _records(path)]


def test_fsdp_two_processes_match_one_and_resume(tmp_path, single_process):
    train(tmp_path / "single", DistContext())  # strategy fsdp is a no-op in a single process
    run_ranks(_train_on_rank, tmp_path)
    single = _losses(tmp_path / "single")
    assert len(single) == STEPS and single[-1] < single[0]  # it trained
    assert math.isnan(single[NAN_STEP])
    for name in ("fsdp", "fsdp_accum", "split"):
        records = _records(tmp_path / name)
        assert [r["skipped_steps"] for r in records] == [0, 1, 1, 1, 1, 1], name
        losses = [r["loss"] for r in records]
        assert math.isnan(losses[NAN_STEP]), name
        for a, b in zip(single, losses, strict=True):
            assert math.isnan(a) or abs(a - b) < 1e-5, (name, single, losses)
        w1, w2 = _weights(tmp_path / "single"), _weights(tmp_path / name)
        assert w1.keys() == w2.keys()
        for k in w1:
            assert torch.allclose(w1[k], w2[k], atol=1e-5), (name, k)


def test_fsdp_blocks_finds_backbone_layers():
    toy = Toy()
    assert fsdp_blocks(toy) == list(toy.backbone.layers)
    assert fsdp_blocks(torch.nn.Linear(2, 2)) == []


def test_fsdp_refuses_ema():
    ctx = DistContext(rank=0, world_size=2)
    with pytest.raises(ValueError, match="ema_decay"):
        Trainer(Toy(), config(ema_decay=0.9), shard, "unused", ctx=ctx, progress=False)
