"""Micro-batching: images from requests that arrive together go through the model as one batch.

A backbone's cost per image falls steeply with batch size, so a server that answers each request
on its own wastes most of its time at concurrency.  :class:`Batcher` puts each image on an asyncio
queue; one worker takes the first waiting image, gathers more for at most ``max_wait_s`` (or until
``max_batch``), runs the model once in its own thread (so the event loop stays free) and hands
every caller its own result (each task's probability row, see :func:`per_image`).  The model
only ever runs in that one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["BatchStats", "Batcher", "TaskRows", "per_image"]

T = TypeVar("T")
R = TypeVar("R")
PredictFn = Callable[[Sequence[Any]], Iterable[R]]
"""A list of images -> one result per image, in order (an array's rows will do)."""
TaskRows = dict[str, np.ndarray]
"""One image's probability row of each task, by task name."""


def per_image(
    predict: Callable[[Sequence[Any]], Mapping[str, np.ndarray]],
) -> Callable[[Sequence[Any]], list[TaskRows]]:
    """``predict`` (images -> {task: (N, C) probabilities}, as
    :meth:`headstart.Model.predict_images`) as images -> one {task: row} per image: what a
    :class:`Batcher` hands each caller."""

    def run(images: Sequence[Any]) -> list[TaskRows]:
        probas = predict(images)
        return [{name: p[i] for name, p in probas.items()} for i in range(len(images))]

    return run


@dataclass
class BatchStats:
    """How the worker has batched so far (exposed for tests and the benchmark)."""

    batches: int = 0
    images: int = 0
    largest: int = 0
    sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.batches += 1
        self.images += size
        self.largest = max(self.largest, size)
        if len(self.sizes) < 10_000:  # bounded: a long-running server must not grow forever
            self.sizes.append(size)


@dataclass
class _Job(Generic[R]):
    image: Any
    future: asyncio.Future[R]


class Batcher(Generic[R]):
    """Batch images for ``predict`` (a list of images -> one result per image, e.g. the rows
    of a probability array, or each task's rows).

    Use inside a running event loop: ``await batcher.predict(image)``; :meth:`close` stops the
    worker and the model thread.  :meth:`run` runs any other model call (e.g. an explanation) in
    the same thread, so two calls never use the model at once.
    """

    def __init__(
        self, predict: PredictFn[R], *, max_batch: int = 16, max_wait_s: float = 0.005
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_s)
        self.stats = BatchStats()
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Job[R]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def _ensure_worker(self) -> asyncio.Queue[_Job[R]]:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work(self._queue))
        return self._queue

    async def predict(self, image: Any) -> R:
        """The result of one image, computed in a batch with whatever else is waiting."""
        queue = self._ensure_worker()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await queue.put(_Job(image, future))
        return await future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the model thread (after the batch in progress, if any)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headstart-model")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _gather(self, queue: asyncio.Queue[_Job[R]]) -> list[_Job[R]]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [job for job in batch if not job.future.done()]  # callers that gave up

    async def _work(self, queue: asyncio.Queue[_Job[R]]) -> None:
        while True:
            batch = await self._gather(queue)
            if not batch:
                continue
            self.stats.record(len(batch))
            try:
                results = await self.run(self._predict, [job.image for job in batch])
            except Exception as exc:  # a model failure fails this batch's requests, not the server
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)

    async def close(self) -> None:
        """Stop the worker (pending callers get CancelledError) and the model thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
            self._worker = None
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().future.cancel()
            self._queue = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
