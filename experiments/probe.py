"""Probe a checkpoint's image pathway (docs/learning.md): per-patch accuracy of the vision and
referring heads, token norms, and how much the answer depends on the image.

    python experiments/probe.py runs/exp/NAME/checkpoints/step_00000400
"""

from __future__ import annotations

import json
import sys

import torch

from kivla.data.language import language_examples
from kivla.model.bundle import PolicyBundle
from kivla.model.vision import object_token_labels, referred_token_labels


@torch.no_grad()
def probe(path: str, n: int = 128) -> dict:
    bundle = PolicyBundle.load(path)
    policy, c = bundle.policy.eval(), bundle.policy.config
    examples = list(language_examples(123, n, kinds=("vqa",), image_size=bundle.builder.image_size))
    batch = bundle.builder.collate([e.to_example() for e in examples])
    layers = (0, c.refer_layer)
    out = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                          batch.suffix_ids, batch.suffix_mask, image_hidden_layers=layers)  # fmt: skip
    text_norm = policy.backbone.token_embed.weight.norm(dim=-1).mean()
    result = {"image_token_norm": float(out.image_hidden[0].norm(dim=-1).mean()),
              "text_embedding_norm": float(text_norm)}  # fmt: skip
    if policy.vision_head is not None:
        owners = object_token_labels(batch.image_labels, c.vision_labels, c.backbone.patch_size)
        objects = (owners > 0) & (owners < c.vision_labels - 1)  # tokens owning an object (not the gripper)
        pred = policy.vision_head(out.image_hidden[0])
        pred_obj = pred[..., 1:].argmax(-1) + 1
        result["vision_object_accuracy"] = float((pred_obj[objects] == owners[objects]).float().mean())
        shape = lambda x: (x - 1) % 3  # noqa: E731
        result["vision_shape_accuracy"] = float(
            (shape(pred_obj[objects]) == shape(owners[objects])).float().mean()
        )
        result["vision_empty_accuracy"] = float((pred.argmax(-1)[owners == 0] == 0).float().mean())
        referred = referred_token_labels(owners, batch.image_refs)
        rpred = policy.refer_head(out.image_hidden[c.refer_layer]).argmax(-1)
        result["refer_recall"] = float((rpred[referred > 0] == referred[referred > 0]).float().mean())
        result["refer_false_positive"] = float((rpred[referred == 0] != 0).float().mean())
    return result


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1]), indent=1))
