import math

from kivla.pipelines.claims import claims_ki, compare, stats


def checkpoint(step, success_id, success_ood=0.0, follow_ood=0.0, vqa_ret=1.0, flow=1.0):
    return {
        "step": step,
        "flow_mse": flow,
        "rollout": {
            "train": {"success_rate": success_id, "follow_rate": 0.5},
            "ood": {"success_rate": success_ood, "follow_rate": follow_ood},
        },
        "language": {"vqa_accuracy": 0.5 * vqa_ret, "caption_perplexity": 2.0},
        "retention": {
            "vqa_accuracy": vqa_ret,
            "vqa_per_type": {"relation": vqa_ret},
            "caption_perplexity": 1.0,
        },
    }


def runs(*finals, **kw):
    """One run per seed, two checkpoints each; `finals` are the last checkpoint's ID success."""
    return [{"checkpoints": [checkpoint(10, s / 2, **kw), checkpoint(20, s, **kw)]} for s in finals]


def test_compare_uses_the_larger_seed_std():
    assert compare((0.8, 0.05), (0.5, 0.1)) == "better"
    assert compare((0.55, 0.05), (0.5, 0.1)) == "within noise"
    assert compare((0.2, 0.0), (0.5, 0.1)) == "worse"
    assert compare((1.0, 0.0), (2.0, 0.1), higher_better=False) == "better"
    assert compare((math.nan, 0.0), (0.5, 0.1)) == "n/a"
    assert stats(runs(0.4, 0.6), lambda c: c["rollout"]["train"]["success_rate"]) == (
        0.5,
        0.09999999999999998,
    )


def test_verdicts_follow_the_numbers():
    good = {"ki": runs(0.8, 0.9, vqa_ret=0.95, success_ood=0.5), "naive": runs(0.2, 0.3, vqa_ret=0.5)}
    text = " ".join(claims_ki(good, ["relation"], None))
    assert "KI trains faster than naive" in text and "ID success averaged over checkpoints" in text
    assert text.count("**reproduced**") >= 2
    bad = {"ki": runs(0.2, 0.3), "naive": runs(0.8, 0.9)}
    assert "**did not reproduce**" in claims_ki(bad, [], None)[0]
    noisy = {"ki": runs(0.0, 1.0), "naive": runs(0.4, 0.6)}
    assert "**not resolved**" in claims_ki(noisy, [], None)[0]


def test_fast_ablation_claim():
    ood = {"ki": 0.6, "stopgrad": 0.2, "joint_fast": 0.5, "ki_no_lang": 0.55}
    all_runs = {name: runs(0.5, 0.5, success_ood=v) for name, v in ood.items()}
    line = next(c for c in claims_ki(all_runs, [], None) if c.startswith("Removing the FAST loss"))
    assert "**reproduced**" in line
    ood["stopgrad"] = 0.58
    all_runs = {name: runs(0.5, 0.5, success_ood=v) for name, v in ood.items()}
    line = next(c for c in claims_ki(all_runs, [], None) if c.startswith("Removing the FAST loss"))
    assert "**did not reproduce**" in line
