"""Is a left/right answer linearly readable from what the backbone gives the answer position?
(docs/learning.md, eleventh round.) Linear probes (ridge on +-1, half the examples to fit, half to
score) of the `<ans>` token's answer on:
  - heads: the outputs of attention heads 0 / 1 of layer L at the `<ans>` position;
  - named: layer L's values at the tokens of the two named objects (perfect grounding);
  - final: the final hidden state of `<ans>` (what the LM head reads);
plus the attention mass heads 0 / 1 put on each of the two named objects ([head][role]).

    python experiments/ground_probe.py runs/exp/pre_ground_lr_only_600/checkpoints/step_00000600 --layer 2
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from answer_attention import ridge_accuracy  # experiments/ is the script's own directory

from kivla.data.language import language_examples
from kivla.model.bundle import PolicyBundle
from kivla.model.vision import referred_objects

OTHER_TYPES = ("color", "shape", "count", "relation", "nearest")


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=12345)
    args = p.parse_args()
    bundle = PolicyBundle.load(args.checkpoint)
    policy, builder, c = bundle.policy.eval(), bundle.builder, bundle.policy.config
    examples = list(language_examples(args.seed, args.examples, ("vqa",), OTHER_TYPES, c.backbone.image_size))
    feats: dict[str, list[np.ndarray]] = {"heads": [], "named": [], "final": []}
    labels, mass = [], []
    for start in range(0, len(examples), 100):
        chunk = examples[start : start + 100]
        batch = builder.collate([ex.to_example() for ex in chunk])
        out = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                              batch.suffix_ids, batch.suffix_mask,
                              text_attention_layers=(args.layer,))  # fmt: skip
        probs = out.text_attention[args.layer][:, :, batch.prefix_ids.shape[1]]  # [B, h, N]: <ans>
        values = out.cache.values[args.layer]  # [B, kv, Np, hd]
        group = probs.shape[1] // values.shape[1]
        n_prefix = values.shape[2]
        heads = [probs[:, h, :n_prefix, None].mul(values[:, h // group]).sum(1) for h in (0, 1)]  # [B, hd]
        feats["heads"].append(torch.cat(heads, -1).float().numpy())
        marked, _ = referred_objects(batch.image_labels, batch.image_refs, c.vision_labels,
                                     c.backbone.patch_size)  # fmt: skip
        m = marked.float()  # [B, 2, n]
        n = m.shape[-1]
        named = [(m[:, r, :, None] * values[:, 0, :n]).sum(1) / m[:, r].sum(-1, keepdim=True).clamp(min=1)
                 for r in (0, 1)]  # fmt: skip
        feats["named"].append(torch.cat(named, -1).float().numpy())
        feats["final"].append(out.suffix_hidden[:, 0].float().numpy())
        # [B, 2 heads, 2 roles]: head h's attention mass on the object named r-th
        mass.append(torch.einsum("bhn,brn->bhr", probs[:, :2, :n], m).numpy())
        labels += [1.0 if ex.answer == "left" else -1.0 for ex in chunk]
    y = np.array(labels)
    record = {"checkpoint": args.checkpoint, "layer": args.layer, "examples": len(y),
              "share_left": float((y > 0).mean()),
              "mass_head_on_role": np.concatenate(mass).mean(0).round(3).tolist(),
              **{f"probe_{k}": ridge_accuracy(np.concatenate(v), y) for k, v in feats.items()}}  # fmt: skip
    print(json.dumps(record))


if __name__ == "__main__":
    main()
