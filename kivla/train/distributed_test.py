"""Two gloo processes on CPU give the same losses and weights as one process on the same global batch."""

import json
from dataclasses import dataclass

import torch

from kivla.train.config import TrainConfig
from kivla.train.distributed import init_distributed, shutdown_distributed
from kivla.train.loop import Trainer
from kivla.train.metrics import read_metrics
from kivla.train.testing import run_ranks

GLOBAL_BATCH = 8


@dataclass
class Out:
    total: torch.Tensor
    parts: dict


class Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, batch):
        x, y = batch
        mse = ((self.lin(x) - y) ** 2).mean()
        return Out(total=mse, parts={"mse": mse.detach()})


def shard(step, micro, rank, world, n):
    """Rank `rank` takes its slice of the step's global batch."""
    g = torch.Generator().manual_seed(micro)  # the same data every step, so the loss must fall
    x, y = torch.randn(GLOBAL_BATCH, 4, generator=g), torch.randn(GLOBAL_BATCH, 3, generator=g)
    return x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]


def train(run_dir):
    # fp32: the equality with one process is exact only without bf16 rounding (auto picks bf16 on
    # CPUs with native bf16 matmuls).
    config = TrainConfig(
        steps=6,
        batch_size=GLOBAL_BATCH,
        lr=0.05,
        warmup_steps=0,
        log_every=1,
        save_every=6,
        ema_decay=None,
        precision="fp32",
    )
    ctx = init_distributed("cpu")
    torch.manual_seed(0)
    trainer = Trainer(Regression(), config, shard, run_dir, ctx=ctx, progress=False)
    trainer.fit()
    weights = {k: v.tolist() for k, v in trainer.model.state_dict().items()}
    if ctx.is_main:
        (run_dir / "weights.json").write_text(json.dumps(weights))
    shutdown_distributed()


def test_two_processes_match_one(tmp_path, single_process):
    train(tmp_path / "single")
    run_ranks(train, tmp_path / "ddp")
    single = [r["loss"] for r in read_metrics(tmp_path / "single" / "metrics.jsonl")]
    ddp = [r["loss"] for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl")]
    assert len(single) == len(ddp) == 6
    assert max(abs(a - b) for a, b in zip(single, ddp, strict=True)) < 1e-6
    assert single[-1] < single[0]  # it trained
    w1 = json.loads((tmp_path / "single" / "weights.json").read_text())
    w2 = json.loads((tmp_path / "ddp" / "weights.json").read_text())
    for k in w1:
        assert torch.allclose(torch.tensor(w1[k]), torch.tensor(w2[k]), atol=1e-6)
