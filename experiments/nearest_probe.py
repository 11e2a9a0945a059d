"""How well a pretrained backbone answers "which object is nearest the gripper?" (docs/learning.md,
nineteenth round), on more questions than the demo's report has (its 300 held-out VQA questions
hold ~46 of them): exact greedy accuracy on N held-out nearest questions from scenes of their own
seed, and, for a backbone with `naming_nearest`, how often the answer's look lands on a token the
object head names as the right object (the most the answer can get by reading that token).

    python experiments/nearest_probe.py runs/demo/pretrain/checkpoints/step_00000600 --questions 300

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from kivla.data.language import QUESTION_TYPES, language_examples
from kivla.eval.language import HELDOUT_SEED, score_examples
from kivla.model.bundle import PolicyBundle

SEED = HELDOUT_SEED + 17  # scenes of their own, far from training seeds and the report's


@torch.no_grad()
def look_accuracy(bundle: PolicyBundle, examples: list, batch_size: int = 64) -> float | None:
    """The share of `examples` whose answer looks hardest at a token whose object-head class is the
    answer's object; None without naming_nearest."""
    naming = bundle.policy.backbone.naming
    if naming is None or naming.near_words is None:
        return None
    looked: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    plain = naming.look_nearest

    def record(object_logits, looks, ids, prompt_mask):
        out = plain(object_logits, looks, ids, prompt_mask)
        changed = (out[0] != looks[0]).any(-1)  # [B, L]: the answer's tokens that look nearest
        looked.append((out[0], changed, object_logits.argmax(-1)))
        return out

    naming.look_nearest = record  # this instance only, for this probe
    try:
        bundle.policy.eval()
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            b = bundle.builder.collate([ex.to_example() for ex in chunk])
            bundle.policy.backbone(
                b.images, b.image_mask, b.prefix_ids, b.prefix_mask, b.suffix_ids, b.suffix_mask
            )
    finally:
        del naming.look_nearest
    hits = []
    for (bias, changed, classes), start in zip(looked, range(0, len(examples), batch_size), strict=True):
        for i, ex in enumerate(examples[start : start + batch_size]):
            rows = changed[i].nonzero().flatten()
            token = int(bias[i, rows[0]].argmax()) if len(rows) else -1
            hits.append(token >= 0 and int(classes[i, token]) == ex.refs[0][0])
    return float(np.mean(hits))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--questions", type=int, default=300)
    args = p.parse_args()
    bundle = PolicyBundle.load(args.checkpoint)
    others = tuple(q for q in QUESTION_TYPES if q != "nearest")
    examples = list(language_examples(SEED, args.questions, kinds=("vqa",), exclude_question_types=others,
                                      image_size=bundle.builder.image_size))  # fmt: skip
    rows = score_examples(bundle, examples)
    accuracy = float(np.mean([r["exact"] for r in rows]))
    answers = [r["answer"] for r in rows]
    chance = max(answers.count(a) for a in set(answers)) / len(answers)
    record = {"checkpoint": str(args.checkpoint), "questions": len(rows), "nearest_accuracy": accuracy,
              "chance": chance, "look_accuracy": look_accuracy(bundle, examples)}  # fmt: skip
    print(json.dumps(record))


if __name__ == "__main__":
    main()
