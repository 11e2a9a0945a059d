import math

import pytest
import torch

from kivla.data.language import language_examples
from kivla.eval.language import (
    LanguageConfig,
    language_metrics,
    language_retention,
    majority_rates,
    markdown,
    score_examples,
)
from kivla.model.testing import IMAGE_SIZE, tiny_world_bundle
from kivla.model.text import ANS, EOS


def greedy_answer(bundle, example, max_len: int = 24) -> list[int]:
    """Token-by-token greedy decoding after <ans> (the slow way), until <eos>."""
    builder, backbone = bundle.builder, bundle.policy.backbone
    batch = builder.collate([example.to_example()])
    ids = [builder.ids[ANS]]
    with torch.no_grad():
        for _ in range(max_len):
            suffix = torch.tensor([ids])
            out = backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask, suffix,
                           torch.ones_like(suffix, dtype=torch.bool))  # fmt: skip
            ids.append(int(backbone.lm_logits(out.suffix_hidden[0, -1]).argmax()))
            if ids[-1] == builder.ids[EOS]:
                break
    return ids[1:]


@pytest.fixture(scope="module")
def trained():
    """A tiny bundle overfit on 12 VQA examples, so that some answers are right and some wrong."""
    bundle = tiny_world_bundle(recipe="ki", seed=0)
    examples = list(language_examples(5, 12, kinds=("vqa",), image_size=IMAGE_SIZE))
    batch = bundle.builder.collate([ex.to_example() for ex in examples])
    opt = torch.optim.Adam(bundle.policy.backbone.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        bundle.policy(batch).parts["lm"].backward()
        opt.step()
    return bundle, examples


def test_teacher_forced_exact_match_equals_greedy_decoding(trained):
    bundle, examples = trained
    rows = score_examples(bundle, examples, batch_size=5)
    decoded_right = []
    for ex in examples:
        want = [*bundle.builder.text.encode(ex.answer), bundle.builder.ids[EOS]]
        decoded_right.append(greedy_answer(bundle, ex) == want)
    assert [r["exact"] for r in rows] == decoded_right
    assert 0 < sum(decoded_right) < len(examples), decoded_right  # both outcomes were checked
    lengths = [len(bundle.builder.text.encode(ex.answer)) + 1 for ex in examples]
    assert [r["tokens"] for r in rows] == lengths


def test_metrics_and_retention_shapes(trained):
    bundle, _ = trained
    config = LanguageConfig(num_vqa=30, num_caption=6, num_text=6, batch_size=16)
    fresh = tiny_world_bundle(recipe="ki", seed=1)
    report = language_retention(bundle, fresh, config)
    p = report["policy"]
    assert p["counts"] == {"vqa": 30, "caption": 6, "text": 6}
    assert 0.0 <= p["vqa_accuracy"] <= 1.0 and len(p["vqa_per_type"]) >= 4
    assert p["caption_perplexity"] > 1.0 and math.isfinite(p["caption_perplexity"])
    # An untrained backbone is near uniform: perplexity close to the vocabulary size.
    ref_ppl = report["reference"]["caption_perplexity"]
    assert 0.3 * bundle.builder.vocab_size < ref_ppl < 3 * bundle.builder.vocab_size
    assert report["retention"]["caption_perplexity"] == pytest.approx(ref_ppl / p["caption_perplexity"])
    assert "| VQA accuracy |" in markdown(report)
    assert set(p["vqa_chance_per_type"]) == set(p["vqa_per_type"])
    assert "| chance |" in markdown(report).splitlines()[2]


def test_chance_is_the_share_of_the_most_common_answer():
    rows = [{"kind": "vqa:color", "answer": a} for a in ("red", "red", "blue", "green")]
    rows += [{"kind": "vqa:left_right", "answer": "yes"}, {"kind": "caption", "answer": "a red circle"}]
    assert majority_rates(rows) == {"color": 0.5, "left_right": 1.0}


def test_metrics_are_deterministic():
    bundle = tiny_world_bundle(recipe="naive", seed=2)
    config = LanguageConfig(num_vqa=8, num_caption=2, num_text=2)
    assert language_metrics(bundle, config) == language_metrics(bundle, config)
    with pytest.raises(ValueError, match="num_vqa"):
        LanguageConfig(num_vqa=-1)
