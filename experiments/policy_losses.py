"""Policy-side levers of docs/learning.md: co-train a recipe from a pretrained backbone with policy
config overrides (for example the dense vision losses on the world's annotated robot frames), then
closed-loop success, follow rate, flow validation error and, when the referring head is trained,
how often the backbone marks the instruction's target on held-out robot frames.

    python experiments/policy_losses.py NAME --data runs/demo/data --val runs/demo/val \
        --init runs/demo/pretrain/checkpoints/step-000600 --steps 400 \
        --policy '{"vision_weight": 1.0, "vision_labels": 20, "vision_readout": "words",
                   "refer_weight": 1.0, "refer_layer": 1}'
    # the fifth round's runs add, for example: "state_input": "token",
    #     "expert": {"keypoints": 16, "keypoint_layer": 0}

The seventh round's bound trains on privileged-state data (`kivla world generate
--privileged-state`; the evaluation then gives the policy the same state):

    python experiments/policy_losses.py priv_ki_1500_lr1e3 --recipe ki --data runs/exp/data_priv \
        --val runs/exp/val_priv --init runs/demo/pretrain/checkpoints/step_00000600 \
        --steps 1500 --lr 1e-3 --policy '{"state_input": "token"}'

A named perception sets its fields as `kivla train --perception` does (the tenth round's runs):

    python experiments/policy_losses.py fz_nk_900_lr1e3 --recipe frozen --perception naming_keypoints \
        --data runs/demo/data --val runs/demo/val --init runs/demo/pretrain/checkpoints/step_00000600 \
        --steps 900 --lr 1e-3

Appends one JSON line to runs/exp/policy_results.jsonl. The sixth round's replanning horizons
(docs/results/replanning.jsonl, one line a horizon in runs/exp/replan.jsonl):

    python experiments/policy_losses.py replan --val runs/demo/val --replan 50 25 5 \
        --only-probe runs/exp/policy/ki_dense_token_kp16l2_prompt_sup_norm_800/checkpoints/step_00000800
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from kivla.data.lerobot_format import LABELS_KEY
from kivla.data.lerobot_read import LeRobotDataset
from kivla.data.mixture import MixtureSampler
from kivla.data.world_env import is_privileged_state_dim
from kivla.data.world_scene import GRIPPER_LABEL
from kivla.eval.baselines import BundlePolicy
from kivla.eval.rollout import EvalConfig, evaluate
from kivla.eval.validation import ValidationConfig, flow_validation
from kivla.model.bundle import PolicyBundle
from kivla.model.vision import object_token_labels, referred_objects, referred_token_labels
from kivla.train.config import TrainConfig
from kivla.train.mixture import MixtureConfig
from kivla.train.run import RunConfig, train_policy


def _held_out_batch(bundle: PolicyBundle, val: Path, frames: int):
    """`frames` robot frames spread over the held-out dataset, with their labels, as one batch; the
    policy in eval mode."""
    dataset = LeRobotDataset(val, horizon=bundle.horizon)
    sampler = MixtureSampler(dataset, {"robot": 1.0}, normalizer=bundle.normalizer)
    rows = torch.linspace(0, len(dataset) - 1, frames).long().tolist()
    bundle.policy.eval()
    return bundle.builder.collate([sampler.robot_example(r) for r in rows])


@torch.no_grad()
def target_marking(bundle: PolicyBundle, val: Path, frames: int = 256) -> dict[str, float] | None:
    """Share of held-out robot frames whose highest 'target' score of the referring head is the
    target's own image token (chance: one over the tokens), or None without a referring head."""
    policy, c = bundle.policy, bundle.policy.config
    if policy.refer_head is None or c.refer_weight == 0:
        return None
    batch = _held_out_batch(bundle, val, frames)
    out = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                          image_hidden_layers=(c.refer_layer,))  # fmt: skip
    logits = policy.refer_head(out.image_hidden[c.refer_layer])  # [B, N, 3]
    owners = object_token_labels(batch.image_labels, c.vision_labels, c.backbone.patch_size)
    truth = referred_token_labels(owners, batch.image_refs)  # [B, N]: 1 at the target's token
    has = (truth == 1).any(-1)
    hit = truth.gather(1, logits[..., 1].argmax(-1, keepdim=True)).squeeze(1) == 1
    return {"target_token_accuracy": float(hit[has].float().mean()), "frames": int(has.sum()),
            "chance": 1.0 / truth.shape[1]}  # fmt: skip


@torch.no_grad()
def image_naming(bundle: PolicyBundle, val: Path, frames: int = 256) -> dict[str, float] | None:
    """What the backbone's image tokens say through the tied LM head (the "words" readout of
    pretraining), on held-out robot frames: how often an object's own token scores that object's two
    words (colour, shape) above every other class's, and how often the token scoring the target's
    words highest is the target's own (perception a keypoint could at best read, told the words;
    chance 1/64). None without the words readout's label ids."""
    policy, c = bundle.policy, bundle.policy.config
    ids = getattr(policy, "label_token_ids", None)
    if ids is None or (ids < 0).all():
        return None
    batch = _held_out_batch(bundle, val, frames)
    out = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                          image_hidden_layers=(c.vision_layer,))  # fmt: skip
    hidden = out.image_hidden[c.vision_layer]  # [B, N, W]
    logp = policy.image_word_logprobs(hidden)  # [B, N, V]
    scores = 0.5 * logp[..., ids.clamp(min=0)].sum(-1)  # [B, N, C]: mean log-prob of each class's words
    scores[..., ids[:, 0] < 0] = float("-inf")
    owners = object_token_labels(batch.image_labels, c.vision_labels, c.backbone.patch_size)  # [B, N]
    objects = owners > 0
    named = scores.argmax(-1)[objects] == owners[objects]
    marked, _ = referred_objects(batch.image_labels, batch.image_refs, c.vision_labels, c.backbone.patch_size)
    target = batch.image_refs[:, 0, : c.vision_labels].float().argmax(-1)  # [B]: the first-named class
    has = marked[:, 0].any(-1)
    by_words = scores.gather(2, target[:, None, None].expand(-1, scores.shape[1], 1)).squeeze(-1)  # [B, N]
    hit = marked[:, 0].gather(1, by_words.argmax(-1, keepdim=True)).squeeze(1)
    return {"object_tokens_named": float(named.float().mean()), "object_tokens": int(objects.sum()),
            "target_found_by_words": float(hit[has].float().mean()), "frames": int(has.sum())}  # fmt: skip


@torch.no_grad()
def keypoint_tracking(bundle: PolicyBundle, val: Path, frames: int = 256) -> dict[str, float] | None:
    """Where the expert's keypoints 0 and 1 lie on held-out robot frames, against the objects the
    instruction names first (the target) and second (a place-on destination): how often the largest
    softmax weight is on the object's own image token, the median xy distance (world units) between
    the keypoint and the object's centre, and the share within 0.05 (a reach's tolerance); None
    without keypoints."""
    policy, c = bundle.policy, bundle.policy.config
    keypoints = policy.expert.keypoints
    if keypoints is None:
        return None
    batch = _held_out_batch(bundle, val, frames)
    cache = policy.encode_prefix(batch)
    values = cache.values[c.expert.keypoint_layer]
    weights = keypoints.weights(values, cache.valid, cache.image_naming)[:, :2].float()  # [B, 2, n]
    points = keypoints.points(weights, keypoints.offsets(values))  # [B, 2, 2] in [-1, 1]
    marked, centre = referred_objects(batch.image_labels, batch.image_refs, c.vision_labels,
                                      c.backbone.patch_size)  # fmt: skip
    out: dict[str, float] = {"chance": 1.0 / marked.shape[-1]}
    for role, prefix in ((0, ""), (1, "destination_")):
        has = marked[:, role].any(-1)
        if not has.any():
            continue
        hit = marked[:, role].gather(1, weights[:, role].argmax(-1, keepdim=True)).squeeze(1)
        error = ((points[:, role] - centre[:, role]).norm(dim=-1) / 2)[has]  # [-1, 1] spans the table
        out |= {f"{prefix}target_token_accuracy": float(hit[has].float().mean()),
                f"{prefix}frames": int(has.sum()), f"{prefix}median_xy_error": float(error.median()),
                f"{prefix}within_0.05": float((error < 0.05).float().mean())}  # fmt: skip
    return out


@torch.no_grad()
def grasp_points(bundle: PolicyBundle, val: Path, frames: int = 256) -> dict[str, float]:
    """Open-loop localization on held-out frames whose expert chunk descends (z < 0.3: a grasp,
    push or reach point): the xy distance between the lowest point of the policy's chunk and the
    expert's (world units; reach succeeds within 0.05), the same at the expert's time of its lowest
    point, how often the policy descends at all, and how often its lowest point is nearest the same
    object as the expert's (objects from the label map)."""
    dataset = LeRobotDataset(val, horizon=bundle.horizon)
    rows = np.linspace(0, len(dataset) - 1, 4 * frames).astype(int)
    items = [it for it in (dataset[int(r)] for r in rows) if (it["actions"][:, 2] < 0.3).any()][:frames]
    obs = {"image": np.stack([it["image"] for it in items]), "state": np.stack([it["state"] for it in items]),
           "instruction": [it["task"] for it in items]}  # fmt: skip
    predicted = bundle.act(obs, generator=torch.Generator().manual_seed(0))  # [B, H, D]
    own, timed, descends, same = [], [], [], []
    for it, pred in zip(items, predicted, strict=True):
        j, k = int(np.argmin(it["actions"][:, 2])), int(np.argmin(pred[:, 2]))
        truth, guess = it["actions"][j, :2], pred[k, :2]
        own.append(float(np.linalg.norm(truth - guess)))
        timed.append(float(np.linalg.norm(truth - pred[j, :2])))
        descends.append(bool(pred[k, 2] < 0.3))
        labels = it["annotations"][LABELS_KEY].reshape(it["image"].shape[:2])
        classes = [c for c in np.unique(labels) if 0 < c < GRIPPER_LABEL]
        centres = np.stack([(np.argwhere(labels == c).mean(0)[::-1] + 0.5) / len(labels) for c in classes])
        same.append(_nearest(centres, truth) == _nearest(centres, guess))
    own = np.array(own)
    return {
        "frames": len(items),
        "median_xy_error": float(np.median(own)),
        "within_0.05": float((own < 0.05).mean()),
        "median_xy_error_at_expert_time": float(np.median(timed)),
        "descends": float(np.mean(descends)),
        "same_object": float(np.mean(same)),
    }


@torch.no_grad()
def sensitivity(bundle: PolicyBundle, val: Path, frames: int = 64) -> dict[str, float]:
    """What the sampled chunks depend on: the mean xy change (world units) of 64 held-out frames'
    chunks when, with everything else fixed, the flow noise is redrawn, or the images,
    instructions or states are rolled by one across the batch (0: the policy ignores that input)."""
    dataset = LeRobotDataset(val, horizon=bundle.horizon)
    items = [dataset[int(r)] for r in np.linspace(0, len(dataset) - 1, frames).astype(int)]
    obs = {"image": np.stack([it["image"] for it in items]), "state": np.stack([it["state"] for it in items]),
           "instruction": [it["task"] for it in items]}  # fmt: skip
    shape = (frames, bundle.horizon, bundle.builder.action_dim)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    base = bundle.act(obs, noise=noise)
    change = lambda o, n=noise: float(np.abs(bundle.act(o, noise=n) - base)[..., :2].mean())  # noqa: E731
    roll = lambda x: np.roll(x, 1, 0) if isinstance(x, np.ndarray) else x[1:] + x[:1]  # noqa: E731
    out = {"noise": change(obs, torch.randn(shape, generator=torch.Generator().manual_seed(1)))}
    for key in ("image", "instruction", "state"):
        out[key] = change({**obs, key: roll(obs[key])})
    return out


def _nearest(centres: np.ndarray, point: np.ndarray) -> int:
    return int(np.argmin(np.linalg.norm(centres - point, axis=-1)))


def replanning(checkpoint: Path, execute_steps: list[int], episodes: int) -> None:
    """Closed loop of one checkpoint for each replanning horizon (same seeds), one line each."""
    for k in execute_steps:
        start = time.time()
        bundle = PolicyBundle.load(checkpoint)
        config = EvalConfig(episodes=episodes, execute_steps=k,
                            privileged_state=is_privileged_state_dim(bundle.builder.state_dim))  # fmt: skip
        summary = evaluate(BundlePolicy(bundle, seed=0), config,
                           Path(f"runs/exp/replan_{k}")).summary()  # fmt: skip
        row = {"checkpoint": str(checkpoint), "execute_steps": k, "eval_s": round(time.time() - start, 1)}
        for split, v in summary.items():
            families = {f: x["success_rate"] for f, x in v["families"].items()}
            row[split] = {"success": v["success_rate"], "follow": v["follow_rate"], "families": families}
        print(json.dumps(row), flush=True)
        Path("runs/exp").mkdir(parents=True, exist_ok=True)
        with open("runs/exp/replan.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only-probe", type=Path, help="skip training: probe this checkpoint")
    p.add_argument("name")
    p.add_argument("--data", type=Path)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--init", type=Path)
    p.add_argument("--recipe", default="ki")
    p.add_argument("--perception", default="prefix", help="a kivla.model.presets.PERCEPTIONS name")
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0, help="training seed (data order, initialization)")
    p.add_argument("--policy", default="{}")
    p.add_argument("--mixture", default="{}")
    p.add_argument("--grad-clip", type=float, default=TrainConfig.grad_clip, help="global norm")
    p.add_argument(
        "--backbone-lr-scale",
        type=float,
        default=TrainConfig.backbone_lr_scale,
        help="the backbone's learning rate relative to --lr",
    )
    p.add_argument(
        "--backbone-every", type=int, default=1,
        help="the backbone's losses every N-th step, the expert's alone between (RunConfig)",
    )  # fmt: skip
    p.add_argument("--episodes", type=int, default=48)
    p.add_argument("--execute-steps", type=int, default=10)
    p.add_argument("--replan", type=int, nargs="+", help="with --only-probe: closed loop executing "
                   "each of these many steps a chunk, appended to runs/exp/replan.jsonl")  # fmt: skip
    args = p.parse_args()
    if args.only_probe is not None and args.replan:
        return replanning(args.only_probe, args.replan, args.episodes)
    if args.only_probe is not None:  # a quick look at a checkpoint, nothing recorded
        bundle = PolicyBundle.load(args.only_probe)
        print("grasp points", grasp_points(bundle, args.val), "marking", target_marking(bundle, args.val))
        print("keypoint 0", keypoint_tracking(bundle, args.val))
        print("image naming", image_naming(bundle, args.val))
        print("sensitivity", sensitivity(bundle, args.val))
        return
    out = Path("runs/exp/policy") / args.name
    train = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, grad_clip=args.grad_clip,
                        backbone_lr_scale=args.backbone_lr_scale,
                        warmup_steps=max(1, args.steps // 20), save_every=args.steps, keep_last=1,
                        log_every=max(1, args.steps // 50), seed=args.seed)  # fmt: skip
    run = RunConfig(recipe=args.recipe, data=args.data, out=out, init=args.init, train=train,
                    perception=args.perception, backbone_every=args.backbone_every,
                    mixture=MixtureConfig(**json.loads(args.mixture)),
                    policy_overrides=json.loads(args.policy))  # fmt: skip
    start = time.time()
    checkpoint = train_policy(run).checkpoints[-1]
    train_s = time.time() - start
    bundle = PolicyBundle.load(checkpoint)
    start = time.time()
    config = EvalConfig(episodes=args.episodes, execute_steps=args.execute_steps,
                        privileged_state=is_privileged_state_dim(bundle.builder.state_dim))  # fmt: skip
    closed = evaluate(BundlePolicy(bundle, seed=0), config, out / "eval").summary()
    record = {
        "name": args.name,
        "args": vars(args) | {"data": str(args.data), "val": str(args.val), "init": str(args.init)},
        "train_s": round(train_s, 1),
        "eval_s": round(time.time() - start, 1),
        "closed_loop": closed,
        "flow_validation": flow_validation(bundle, args.val, ValidationConfig(num_frames=256)),
        "marking": target_marking(bundle, args.val),
        "keypoint_tracking": keypoint_tracking(bundle, args.val),
        "image_naming": image_naming(bundle, args.val),
        "grasp_points": grasp_points(bundle, args.val),
        "sensitivity": sensitivity(bundle, args.val),
    }
    Path("runs/exp").mkdir(parents=True, exist_ok=True)
    with open("runs/exp/policy_results.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    for split, s in closed.items():
        fams = ", ".join(
            f"{k} {v['success_rate']:.0%}/{v['follow_rate']:.0%}" for k, v in s["families"].items()
        )
        print(f"{split}: success {s['success_rate']:.1%} follow {s['follow_rate']:.1%} ({fams})")
    print("flow val", record["flow_validation"], "marking", record["marking"])
    print("keypoint 0", record["keypoint_tracking"], "image naming", record["image_naming"])
    print("grasp points", record["grasp_points"], "sensitivity", record["sensitivity"])


if __name__ == "__main__":
    main()
