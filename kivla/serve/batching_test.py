import asyncio
import threading

import numpy as np
import pytest

from kivla.serve.batching import Batcher
from kivla.serve.observation import Request


def _request(value: float, n: int = 1) -> Request:
    return Request(
        images=np.zeros((n, 2, 2, 3), np.uint8),
        states=np.full((n, 1), value, np.float32),
        prompts=["x"] * n,
        noise=None,
        noise_seed=None,
        batched=n > 1,
    )


class Recorder:
    """A stand-in policy: each row's action is its state; records the batch sizes; can fail."""

    def __init__(self, delay: float = 0.01, fail_on: float | None = None) -> None:
        self.sizes: list[int] = []
        self.delay, self.fail_on = delay, fail_on
        self.lock = threading.Lock()

    def __call__(self, requests: list[Request]) -> list[np.ndarray]:
        import time

        with self.lock:
            self.sizes.append(sum(r.size for r in requests))
        time.sleep(self.delay)
        if self.fail_on is not None and any((r.states == self.fail_on).any() for r in requests):
            raise RuntimeError("this observation breaks the policy")
        return [np.repeat(r.states[:, None, :], 3, axis=1) for r in requests]


def _run(batcher: Batcher, requests: list[Request]) -> list:
    async def go():
        try:
            return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        finally:
            await batcher.close()

    return asyncio.run(go())


def test_each_request_gets_its_own_rows_in_shared_batches():
    policy = Recorder()
    requests = [_request(float(i), n=1 + i % 3) for i in range(12)]
    results = _run(Batcher(policy, max_batch=8, window_s=0.05, clients=lambda: 12), requests)
    for r, res in zip(requests, results, strict=True):
        assert res.actions.shape == (r.size, 3, 1)
        np.testing.assert_array_equal(res.actions[:, 0], r.states)
    assert max(policy.sizes) <= 8 and sum(policy.sizes) == sum(r.size for r in requests)
    assert len(policy.sizes) < len(requests)  # requests were batched
    assert all(res.batch_size >= res.actions.shape[0] for res in results)


def test_max_batch_one_runs_one_request_at_a_time():
    policy = Recorder(delay=0.0)
    _run(Batcher(policy, max_batch=1, window_s=0.05, clients=lambda: 5), [_request(i) for i in range(5)])
    assert policy.sizes == [1] * 5


def test_a_lone_client_does_not_wait_for_the_window():
    import time

    policy = Recorder(delay=0.0)
    start = time.perf_counter()
    _run(Batcher(policy, max_batch=16, window_s=5.0, clients=lambda: 1), [_request(0.0)])
    assert time.perf_counter() - start < 1.0


def test_a_failing_request_fails_alone():
    policy = Recorder(fail_on=3.0)
    results = _run(
        Batcher(policy, max_batch=8, window_s=0.05, clients=lambda: 6), [_request(i) for i in range(6)]
    )
    assert isinstance(results[3], RuntimeError)
    for i, res in enumerate(results):
        if i != 3:
            np.testing.assert_array_equal(res.actions[:, 0, 0], [i])


def test_config_errors():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="window_s"):
        Batcher(Recorder(), window_s=-1)
