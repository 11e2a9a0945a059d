"""Where does the answer look, and what do the image tokens carry? (docs/learning.md, twelfth round.)

For held-out VQA questions of one type, on a pretrained checkpoint:
  - attention: per layer and head, the mass the `<ans>` position puts on the token of the object
    the question names, against the mean mass on each other object's token (equal numbers: the
    answer looks at objects, not at the named one);
  - residual: per layer, the RMS of the image tokens' residual stream, the part common to every
    token (the mean over tokens and examples), and what the layer's attention and MLP add;
  - probes: a ridge probe of the answer from the named object's values in each layer (what an
    attention that found the object could read) and from the final `<ans>` hidden state.

    python experiments/answer_attention.py runs/demo/pretrain/checkpoints/step_00000600 --type color
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from kivla.data.language import QUESTION_TYPES, language_examples
from kivla.data.world_scene import NUM_LABELS, is_object_label
from kivla.model.bundle import PolicyBundle
from kivla.model.layers import additive_mask, attend, rope_tables
from kivla.model.masks import backbone_attention_mask, prefix_positions
from kivla.model.vision import object_token_labels, referred_objects


def ridge_accuracy(features: np.ndarray, labels: np.ndarray, alpha: float = 1.0) -> float:
    """One-vs-rest ridge regression of +-1 class indicators fitted on the first half of the
    examples; accuracy of its argmax on the second half."""
    classes = np.unique(labels)
    targets = (labels[:, None] == classes[None]) * 2.0 - 1.0
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    half = len(x) // 2
    w = np.linalg.solve(x[:half].T @ x[:half] + alpha * np.eye(x.shape[1]), x[:half].T @ targets[:half])
    return float((classes[(x[half:] @ w).argmax(1)] == labels[half:]).mean())


def rms(t: torch.Tensor) -> float:
    return round(float(t.pow(2).mean().sqrt()), 3)


@torch.no_grad()
def residual_growth(bundle: PolicyBundle, batch) -> list[dict[str, float]]:
    """Per layer (prefix only): RMS of the image tokens before it, of their common part, and of
    what its attention and MLP add to them."""
    backbone = bundle.policy.backbone
    x, valid = backbone.embed_prefix(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask)
    n = backbone.config.num_image_tokens
    mask = additive_mask(backbone_attention_mask(valid, valid[:, :0]), x.dtype)
    rope = rope_tables(prefix_positions(valid), backbone.head_dim, backbone.rope_theta, x.dtype)
    rows = []
    for i, layer in enumerate(backbone.layers):
        row = {"layer": i, "image_rms": rms(x[:, :n]), "image_common_rms": rms(x[:, :n].mean((0, 1)))}
        q, k, v = layer.attn(layer.attn_norm(x), rope)
        added = layer.attn.out(attend(q, k, v, mask))
        x = x + added
        mlp = layer.mlp(layer.mlp_norm(x))
        x = x + mlp
        rows.append({**row, "attention_adds": rms(added[:, :n]), "mlp_adds": rms(mlp[:, :n]),
                     "mlp_adds_common": rms(mlp[:, :n].mean((0, 1)))})  # fmt: skip
    return rows


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--type", default="color", choices=QUESTION_TYPES)
    p.add_argument("--examples", type=int, default=600)
    p.add_argument("--seed", type=int, default=12345)
    args = p.parse_args()
    bundle = PolicyBundle.load(args.checkpoint)
    policy, c = bundle.policy.eval(), bundle.policy.config
    others = tuple(q for q in QUESTION_TYPES if q != args.type)
    examples = list(language_examples(args.seed, args.examples, ("vqa",), others, c.backbone.image_size))
    batch = bundle.builder.collate([ex.to_example() for ex in examples])
    depth, n, lp = c.backbone.depth, c.backbone.num_image_tokens, batch.prefix_ids.shape[1]
    out = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                          batch.suffix_ids, batch.suffix_mask,
                          text_attention_layers=tuple(range(depth)))  # fmt: skip
    labels = c.vision_labels or NUM_LABELS
    marked, _ = referred_objects(batch.image_labels, batch.image_refs, labels, c.backbone.patch_size)
    named = marked[:, 0].float()  # [B, n]: the token of the object the question names (first)
    owners = object_token_labels(batch.image_labels, labels, c.backbone.patch_size)
    objects = is_object_label(owners).float()  # object tokens, not the gripper's
    other = objects * (1 - named)
    answers = batch.suffix_ids[:, 1].numpy()  # the first answer token
    record = {"checkpoint": args.checkpoint, "type": args.type, "examples": len(examples), "attention": []}
    for layer in range(depth):
        probs = out.text_attention[layer][:, :, lp, :n]  # [B, h, n]: <ans> over the image tokens
        on_named = torch.einsum("bhn,bn->bh", probs, named).mean(0)
        per_other = torch.einsum("bhn,bn->bh", probs, other) / other.sum(1, keepdim=True).clamp(min=1)
        per_other = per_other.mean(0)
        record["attention"].append({"layer": layer, "named": on_named.numpy().round(3).tolist(),
                                    "per_other_object": per_other.numpy().round(3).tolist()})  # fmt: skip
    record["residual"] = residual_growth(bundle, batch)
    probes = {}
    for layer, values in enumerate(out.cache.values):
        image = values[:, :, :n].transpose(1, 2).flatten(2)  # [B, n, kv * hd]
        token = (named[:, :, None] * image).sum(1) / named.sum(1, keepdim=True).clamp(min=1)
        probes[f"named_values_layer_{layer}"] = ridge_accuracy(token.float().numpy(), answers)
    probes["final_ans_hidden"] = ridge_accuracy(out.suffix_hidden[:, 0].float().numpy(), answers)
    logits = policy.backbone.lm_logits(out.suffix_hidden[:, 0])
    probes["model_first_token"] = float((logits.argmax(-1).numpy() == answers).mean())
    record["probes"] = probes
    print(json.dumps(record))


if __name__ == "__main__":
    main()
