"""Ablations of the image pathway (docs/learning.md): language-pretrain the tiny VLM with a set of
config overrides and score held-out VQA per question type at a few checkpoints.

    python experiments/learning.py NAME --steps 400 --every 100 \
        --backbone '{"stem": "conv"}' --policy '{"vision_weight": 1.0, "vision_labels": 20}'

Without --backbone / --policy the run has language pretraining's defaults (naming attention and
the dense vision losses); a JSON object replaces them whole ('{}': none of them), as in the records
of docs/results/learning_ablation.jsonl. --stem-steps defaults to 0 here.
Appends one JSON line per checkpoint to runs/exp/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from kivla.eval.language import LanguageConfig, heldout_examples, score_examples, summarize
from kivla.model.bundle import PolicyBundle
from kivla.train.checkpoint import list_checkpoints
from kivla.train.mixture import MixtureConfig
from kivla.train.run import PretrainConfig, pretrain_backbone


@torch.no_grad()
def image_sensitivity(bundle: PolicyBundle, examples, n: int = 64) -> float:
    """Relative change of the answer logits when the images of a batch are permuted."""
    batch = bundle.builder.collate([ex.to_example() for ex in examples[:n]])
    backbone = bundle.policy.backbone
    bundle.policy.eval()

    def logits(images):
        out = backbone(images, batch.image_mask, batch.prefix_ids, batch.prefix_mask, batch.suffix_ids,
                       batch.suffix_mask)  # fmt: skip
        return backbone.lm_logits(out.suffix_hidden[:, 0])  # the <ans> position predicts the answer

    base = logits(batch.images)
    perm = torch.roll(torch.arange(batch.batch_size), 1)
    moved = logits(batch.images[perm])
    return float((moved - base).norm() / base.norm())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--image-size", type=int, default=64)
    # JSON overrides; without them, language pretraining's defaults (WORLD_NAMING, WORLD_VISION_LOSSES)
    p.add_argument("--backbone", default=None, help="BackboneConfig overrides (JSON)")
    p.add_argument("--policy", default=None, help="KIPolicyConfig overrides (JSON)")
    p.add_argument("--mixture", default='{"robot": 0, "caption": 0.3, "vqa": 0.6, "text": 0.1}')
    p.add_argument("--questions", type=int, default=300)
    p.add_argument("--stem-steps", type=int, default=0, help="vision pretraining of the stem first")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path("runs/exp") / args.name
    given = (("backbone_overrides", args.backbone), ("policy_overrides", args.policy))
    overrides = {name: json.loads(value) for name, value in given if value is not None}
    config = PretrainConfig(out=out, steps=args.steps, batch_size=args.batch, lr=args.lr,
                            image_size=args.image_size, mixture=MixtureConfig(**json.loads(args.mixture)),
                            save_every=args.every, stem_steps=args.stem_steps, seed=args.seed,
                            **overrides)  # fmt: skip
    start = time.perf_counter()
    pretrain_backbone(config, progress=False)
    seconds = time.perf_counter() - start
    examples = heldout_examples(LanguageConfig(num_vqa=args.questions, num_caption=0, num_text=0),
                                args.image_size)  # fmt: skip
    with open("runs/exp/results.jsonl", "a") as f:
        for ckpt in list_checkpoints(out / "checkpoints"):
            bundle = PolicyBundle.load(ckpt)
            metrics = summarize(score_examples(bundle, examples))
            record = {"name": args.name, "step": int(ckpt.name.split("_")[1]), "train_s": seconds,
                      "vqa": metrics["vqa_accuracy"], "per_type": metrics["vqa_per_type"],
                      "image_sensitivity": image_sensitivity(bundle, examples),
                      "args": vars(args)}  # fmt: skip
            f.write(json.dumps(record) + "\n")
            print(json.dumps({k: v for k, v in record.items() if k != "args"}), flush=True)


if __name__ == "__main__":
    main()
