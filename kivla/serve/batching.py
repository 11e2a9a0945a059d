"""Dynamic batching: requests that arrive close together are sampled in one `PolicyBundle.act` call.

The worker takes the first waiting request, then keeps taking requests until the batch holds
`max_batch` observations, or every connected client has a request in it, or `window_s` has passed
since the batch opened; a lone client never waits. While one batch runs (in a worker thread, so
the event loop keeps reading frames), the next one fills up. Each request gets back only its own
rows. If a batch fails, its requests are retried one by one, so a request that breaks the policy
fails alone.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from kivla.serve.observation import Request

log = logging.getLogger(__name__)


@dataclass
class Result:
    actions: np.ndarray  # float32 [n, H, D], this request's rows only
    infer_ms: float  # the batch's policy call
    queue_ms: float  # from arrival to the start of its batch
    batch_size: int  # observations in the batch


@dataclass
class _Pending:
    request: Request
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """`await submit(request)` -> Result; `run(requests) -> list of [n_i, H, D]` does the sampling."""

    def __init__(
        self,
        run: Callable[[list[Request]], list[np.ndarray]],
        max_batch: int = 16,
        window_s: float = 0.002,
        clients: Callable[[], int] = lambda: 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: expected >= 1, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"window_s: expected >= 0, got {window_s}")
        self.run, self.max_batch, self.window_s, self.clients = run, max_batch, window_s, clients
        self._queue: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kivla-policy")
        self._worker: asyncio.Task | None = None

    async def submit(self, request: Request) -> Result:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())
        pending = _Pending(request, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._arrived.set()
        return await pending.future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def _next(self, timeout: float | None) -> _Pending | None:
        """The oldest waiting request; waits up to `timeout` (None: forever) when there is none."""
        while not self._queue:
            self._arrived.clear()
            if timeout is not None and timeout <= 0:
                return None
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return None
        return self._queue[0]

    async def _gather(self) -> list[_Pending]:
        first = await self._next(None)
        batch, size = [self._queue.popleft()], first.request.size
        deadline = time.perf_counter() + self.window_s
        while size < self.max_batch:
            waiting = bool(self._queue)
            if not waiting and len(batch) >= self.clients():
                break  # every connected client is in this batch: nobody to wait for
            item = await self._next(deadline - time.perf_counter())
            if item is None or size + item.request.size > self.max_batch:
                break  # the window closed, or the next request starts the next batch
            batch.append(self._queue.popleft())
            size += item.request.size
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            batch = [p for p in batch if not p.future.done()]  # clients gone while waiting
            if not batch:
                continue
            start = time.perf_counter()
            requests = [p.request for p in batch]
            try:
                outputs = await loop.run_in_executor(self._executor, self.run, requests)
                results = [(p, out, None) for p, out in zip(batch, outputs, strict=True)]
            except Exception as err:
                if len(batch) == 1:
                    results = [(batch[0], None, err)]
                else:
                    log.warning("a batch of %d requests failed; retrying them one by one", len(batch))
                    results = []
                    for p in batch:
                        try:
                            out = (await loop.run_in_executor(self._executor, self.run, [p.request]))[0]
                            results.append((p, out, None))
                        except Exception as one_err:
                            results.append((p, None, one_err))
            infer_ms = (time.perf_counter() - start) * 1e3
            total = sum(r.size for r in requests)
            for p, out, error in results:
                if p.future.done():
                    continue
                if error is not None:
                    p.future.set_exception(error)
                else:
                    p.future.set_result(Result(out, infer_ms, (start - p.arrived) * 1e3, total))
