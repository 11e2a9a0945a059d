"""Language retention: VQA / text accuracy and caption perplexity of a bundle's backbone.

Exact greedy accuracy in one teacher-forced pass: greedy decoding reproduces the reference answer
iff, teacher-forced on it, the argmax at every answer position (answer tokens and <eos>) is the
reference token — before the first mistake the greedy prefix *is* the reference. So one batched
forward pass of the backbone over [image, question | <ans> answer <eos>] gives both exact-match
accuracy and the per-token NLL (perplexity). The argmax runs over the whole vocabulary, action and
state ids included, as a real greedy decoder would.

Scenes come from `language_examples` with a seed (HELDOUT_SEED) far from any training seed, so
the examples are held out; every question type is scored, including types excluded from the
co-training mixture.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kivla.data.language import QUESTION_TYPES, LanguageExample, language_examples

HELDOUT_SEED = 1_000_003


@dataclass
class LanguageConfig:
    num_vqa: int = 300  # VQA questions, types drawn uniformly
    num_caption: int = 100
    num_text: int = 100
    seed: int = HELDOUT_SEED
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("num_vqa", "num_caption", "num_text"):
            if getattr(self, name) < 0:
                raise ValueError(f"LanguageConfig.{name}: expected >= 0, got {getattr(self, name)}")
        if self.num_vqa + self.num_caption + self.num_text == 0:
            raise ValueError("LanguageConfig: num_vqa + num_caption + num_text must be > 0")
        if self.batch_size < 1:
            raise ValueError(f"LanguageConfig.batch_size: expected >= 1, got {self.batch_size}")


def heldout_examples(config: LanguageConfig, image_size: int) -> list[LanguageExample]:
    """The evaluation set: VQA, captions and text examples from held-out scenes."""
    out: list[LanguageExample] = []
    for i, (kind, n) in enumerate((("vqa", config.num_vqa), ("caption", config.num_caption),
                                   ("text", config.num_text))):  # fmt: skip
        if n:
            out += language_examples(config.seed + i, n, kinds=(kind,), image_size=image_size)
    return out


@torch.no_grad()
def score_examples(bundle, examples: list[LanguageExample], batch_size: int = 64) -> list[dict[str, Any]]:
    """Per example: {"kind", "exact": greedy decode == answer, "nll": summed NLL, "tokens": count,
    "answer": the reference}."""
    policy, builder = bundle.policy, bundle.builder
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    rows: list[dict[str, Any]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = builder.collate([ex.to_example() for ex in chunk]).to(device)
        out = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                              batch.suffix_ids, batch.suffix_mask)  # fmt: skip
        targets = batch.suffix_loss["lm"][:, 1:] & batch.loss_mask["lm"][:, None]  # [B, Ls-1]
        labels = batch.suffix_ids[:, 1:]  # the token before each target predicts it
        logits = policy.backbone.lm_logits(out.suffix_hidden[:, :-1]).float()  # [B, Ls-1, V]
        nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # [B, Ls-1]
        exact = ((logits.argmax(-1) == labels) | ~targets).all(dim=1)
        nll_sum, tokens = (nll * targets).sum(dim=1), targets.sum(dim=1)
        for i, ex in enumerate(chunk):
            rows.append({"kind": ex.kind, "exact": bool(exact[i]), "nll": float(nll_sum[i]),
                         "tokens": int(tokens[i]), "answer": ex.answer})  # fmt: skip
    policy.train(was_training)
    return rows


def majority_rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Chance per VQA type: the share of its questions whose answer is the type's most common one
    (the accuracy of a model that ignores the image and always gives that answer)."""
    rates = {}
    for q in QUESTION_TYPES:
        answers = [r["answer"] for r in rows if r["kind"] == f"vqa:{q}"]
        if answers:
            rates[q] = max(answers.count(a) for a in set(answers)) / len(answers)
    return rates


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall / per question type (and its chance), caption perplexity, text accuracy,
    answer perplexity."""

    def acc(sel: list[dict]) -> float:
        return float(np.mean([r["exact"] for r in sel])) if sel else float("nan")

    def ppl(sel: list[dict]) -> float:
        tokens = sum(r["tokens"] for r in sel)
        return math.exp(sum(r["nll"] for r in sel) / tokens) if tokens else float("nan")

    vqa = [r for r in rows if r["kind"].startswith("vqa:")]
    captions = [r for r in rows if r["kind"] == "caption"]
    text = [r for r in rows if r["kind"] == "text"]
    per_type = {q: acc([r for r in vqa if r["kind"] == f"vqa:{q}"]) for q in QUESTION_TYPES}
    return {
        "vqa_accuracy": acc(vqa),
        "vqa_per_type": {q: v for q, v in per_type.items() if not math.isnan(v)},
        "vqa_chance_per_type": majority_rates(vqa),
        "vqa_perplexity": ppl(vqa),
        "caption_perplexity": ppl(captions),
        "caption_exact": acc(captions),
        "text_accuracy": acc(text),
        "counts": {"vqa": len(vqa), "caption": len(captions), "text": len(text)},
    }


def language_metrics(bundle, config: LanguageConfig | None = None) -> dict[str, Any]:
    """`summarize` of a bundle's backbone on the held-out language set."""
    config = config or LanguageConfig()
    examples = heldout_examples(config, bundle.builder.image_size)
    return summarize(score_examples(bundle, examples, config.batch_size))


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def retention(policy: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Higher is better, 1 = as good as the reference: accuracy ratios policy / reference and the
    perplexity ratio reference / policy."""
    return {
        "vqa_accuracy": _ratio(policy["vqa_accuracy"], reference["vqa_accuracy"]),
        "vqa_per_type": {
            q: _ratio(v, reference["vqa_per_type"].get(q, float("nan")))
            for q, v in policy["vqa_per_type"].items()
        },
        "text_accuracy": _ratio(policy["text_accuracy"], reference["text_accuracy"]),
        "caption_perplexity": _ratio(reference["caption_perplexity"], policy["caption_perplexity"]),
    }


def language_retention(bundle, reference, config: LanguageConfig | None = None) -> dict[str, Any]:
    """{"policy": metrics, "reference": metrics, "retention": ratios, "config": ...}."""
    config = config or LanguageConfig()
    policy_metrics = language_metrics(bundle, config)
    reference_metrics = language_metrics(reference, config)
    return {
        "policy": policy_metrics,
        "reference": reference_metrics,
        "retention": retention(policy_metrics, reference_metrics),
        "config": asdict(config),
    }


def markdown(report: dict[str, Any]) -> str:
    """Table of a `language_retention` (or a single `language_metrics` under "policy")."""
    p, r = report["policy"], report.get("reference")
    ret = report.get("retention")
    chance = p.get("vqa_chance_per_type")  # absent in results written before it was measured
    head = "| metric | policy |" + (" reference | retention |" if r else "") + (" chance |" if chance else "")
    rule = "|---|---:|" + ("---:|---:|" if r else "") + ("---:|" if chance else "")
    lines = ["## Language", "", head, rule]

    def row(name: str, pv: float, rv: float | None, tv: float | None, fmt: str, cv: str = "") -> None:
        cells = f"| {name} | {pv:{fmt}} |"
        if r is not None:
            cells += f" {rv:{fmt}} | {tv:.2f} |"
        if chance:
            cells += f" {cv} |"
        lines.append(cells)

    row("VQA accuracy", p["vqa_accuracy"], r and r["vqa_accuracy"], ret and ret["vqa_accuracy"], ".1%")
    for q, v in p["vqa_per_type"].items():
        row(f"VQA {q}", v, r and r["vqa_per_type"].get(q, float("nan")),
            ret and ret["vqa_per_type"][q], ".1%", f"{chance[q]:.1%}" if chance else "")  # fmt: skip
    row("text accuracy", p["text_accuracy"], r and r["text_accuracy"], ret and ret["text_accuracy"], ".1%")
    row("caption perplexity", p["caption_perplexity"], r and r["caption_perplexity"],
        ret and ret["caption_perplexity"], ".3g")  # fmt: skip
    return "\n".join(lines) + "\n"


def pretrain_summary(checkpoint: Path, num_vqa: int = 300) -> str:
    """One paragraph: the pretrained backbone's VQA accuracy and caption perplexity on held-out scenes."""
    from kivla.model.bundle import PolicyBundle

    metrics = language_metrics(
        PolicyBundle.load(checkpoint), LanguageConfig(num_vqa=num_vqa, num_caption=num_vqa // 3, num_text=0)
    )
    per_type = ", ".join(f"{q} {v:.0%}" for q, v in sorted(metrics["vqa_per_type"].items()))
    return (
        f"checkpoint: {checkpoint}\n"
        f"held-out VQA accuracy {metrics['vqa_accuracy']:.1%} ({per_type}); "
        f"caption perplexity {metrics['caption_perplexity']:.2f}"
    )
