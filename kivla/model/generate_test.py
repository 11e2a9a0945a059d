import math

import numpy as np
import pytest
import torch

from kivla.model.conftest import robot_example, vqa_example
from kivla.model.generate import answer_logprobs, greedy_answers
from kivla.model.policy import KIPolicy
from kivla.model.presets import recipe_config
from kivla.model.text import ANS, EOS


def test_logprobs_match_the_lm_loss(builder, config):
    torch.manual_seed(0)
    policy = KIPolicy(recipe_config("ki", config))
    rng = np.random.default_rng(0)
    batch = builder.collate([vqa_example(rng), vqa_example(rng)])
    logp, count = answer_logprobs(policy, batch)
    assert count.tolist() == [2.0, 2.0]  # "red" <eos>
    lm = policy(batch).parts["lm"]
    assert math.isclose(-(logp.sum() / count.sum()).item(), lm.item(), rel_tol=1e-5)


def test_greedy_answers_learn_a_fixed_answer(builder, config):
    torch.manual_seed(0)
    policy = KIPolicy(recipe_config("ki", config))
    rng = np.random.default_rng(0)
    batch = builder.collate([vqa_example(rng) for _ in range(4)])
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        policy(batch).total.backward()
        optimizer.step()
    text = builder.text
    obs = builder.observation(
        [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)], ["what color is the circle"]
    )
    answers = greedy_answers(
        policy, obs, text.token_id(ANS), text.token_id(EOS), allowed_vocab=text.vocab_size
    )
    assert text.decode(answers[0]) == "red"
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_answers(policy, obs, 5, 3, max_new_tokens=0)


def test_fixed_flow_time(builder, config):
    policy = KIPolicy(recipe_config("ki", config))
    batch = builder.collate([robot_example(np.random.default_rng(0))])
    loss = lambda t: policy(batch, generator=torch.Generator().manual_seed(0), flow_time=t).parts["flow"]  # noqa: E731
    assert torch.equal(loss(0.5), loss(0.5)) and not torch.equal(loss(0.1), loss(0.9))
    with pytest.raises(ValueError, match="flow_time"):
        loss(1.5)
