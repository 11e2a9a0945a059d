from dataclasses import dataclass

import pytest
import torch

from kivla.train.checkpoint import list_checkpoints
from kivla.train.config import TrainConfig
from kivla.train.loop import NonFiniteLossError, Trainer, make_optimizer
from kivla.train.metrics import read_metrics


@dataclass
class Out:
    total: torch.Tensor
    parts: dict


class Toy(torch.nn.Module):
    """Regression with a random term, so that resume must restore the random stream too."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.norm = torch.nn.LayerNorm(3)

    def forward(self, batch):
        x, y = batch
        noise = torch.randn_like(y) * 0.1
        mse = ((self.norm(self.lin(x)) - y - noise) ** 2).mean()
        return Out(total=mse, parts={"mse": mse.detach()})


def batches(step, micro, rank, world, n):
    g = torch.Generator().manual_seed(step * 100 + micro * 10 + rank)
    return torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g)


def cfg(**kw):
    base = dict(steps=8, batch_size=4, warmup_steps=2, lr=1e-2, log_every=2, save_every=4, ema_decay=0.9)
    return TrainConfig(**{**base, **kw})


def run(tmp_path, name, config, fn=batches, resume=False):
    torch.manual_seed(0)
    trainer = Trainer(Toy(), config, fn, tmp_path / name, progress=False)
    return trainer, trainer.fit(resume=resume)


def test_resume_is_bit_identical(tmp_path):
    full, _ = run(tmp_path, "full", cfg(grad_accum=2))
    run(tmp_path, "split", cfg(grad_accum=2, stop_at=4))
    resumed, result = run(tmp_path, "split", cfg(grad_accum=2), resume=True)
    assert result.step == 8
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert full.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]


def test_checkpoints_are_pruned_and_complete(tmp_path):
    run(tmp_path, "r", cfg(steps=12, save_every=2, keep_last=2))
    kept = list_checkpoints(tmp_path / "r" / "checkpoints")
    assert [p.name for p in kept] == ["step_00000010", "step_00000012"]
    assert {"model.safetensors", "ema.safetensors", "optimizer.safetensors", "trainer.json"} <= {
        f.name for f in kept[-1].iterdir()
    }
    assert not [p for p in (tmp_path / "r" / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    def poisoned(step, micro, rank, world, n):
        x, y = batches(step, micro, rank, world, n)
        return (x * float("nan"), y) if step == 3 else (x, y)

    trainer, result = run(tmp_path, "nan", cfg(), fn=poisoned)
    assert result.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    records = read_metrics(tmp_path / "nan" / "metrics.jsonl")
    assert any(r.get("nonfinite_step") == 1.0 and r["step"] == 4 for r in records)


def test_consecutive_nonfinite_steps_abort(tmp_path):
    def always_nan(step, micro, rank, world, n):
        x, y = batches(step, micro, rank, world, n)
        return x * float("nan"), y

    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        run(tmp_path, "abort", cfg(max_bad_steps=3), fn=always_nan)


def test_resume_without_checkpoint_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        run(tmp_path, "empty", cfg(), resume=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("lr", -1.0),
        ("precision", "fp8"),
        ("ema_decay", 1.5),
        ("stop_at", 99),
        ("strategy", "zero"),
        ("backbone_lr_scale", 0.0),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        cfg(**{field: value})


class TwoPart(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.LayerNorm(3)
        self.expert = Toy()


def test_backbone_learns_at_its_own_rate():
    model = TwoPart()
    one = make_optimizer(model, cfg())  # one rate: two groups (matrices decayed, the rest not)
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in one.param_groups] == [
        (1e-2, 0.01, 1), (1e-2, 0.0, 5)]  # fmt: skip
    split = make_optimizer(model, cfg(backbone_lr_scale=0.1))
    rates = {id(p): g["lr"] for g in split.param_groups for p in g["params"]}
    assert all(rates[id(p)] == pytest.approx(1e-3) for p in model.backbone.parameters())
    assert all(rates[id(p)] == 1e-2 for p in model.expert.parameters())
    assert split.param_groups[0]["lr"] == 1e-2  # the logged rate stays the run's lr


def test_batch_must_split_over_ranks():
    with pytest.raises(ValueError, match=r"TrainConfig\.batch_size"):
        cfg(batch_size=6, grad_accum=4).micro_batch_size(world_size=1)


def test_ema_warms_up_then_settles_to_its_decay():
    from kivla.train.loop import ema_update

    update = ema_update(0.99)
    averaged, current = [torch.zeros(1)], [torch.ones(1)]
    update(averaged, current, torch.tensor(1))  # decay (1+1)/(10+1) = 0.18: mostly the new value
    assert averaged[0].item() == pytest.approx(1 - 2 / 11)
    averaged = [torch.zeros(1)]
    update(averaged, current, torch.tensor(10_000))  # long after warmup: the configured decay
    assert averaged[0].item() == pytest.approx(0.01)


def test_ema_copies_integer_buffers():
    # Vocabulary ids (the words readout's label_token_ids) live beside the weights in the EMA.
    from kivla.train.loop import ema_update

    averaged, current = [torch.zeros(1), torch.tensor([1, 2])], [torch.ones(1), torch.tensor([7, 9])]
    ema_update(0.99)(averaged, current, torch.tensor(1))
    assert averaged[1].tolist() == [7, 9] and averaged[1].dtype == torch.int64
    assert 0 < averaged[0].item() < 1
