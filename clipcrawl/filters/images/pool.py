"""Decode/resize in worker processes, fed from an asyncio loop, with adaptive batching.

``await pool.resize(body)`` queues one downloaded body. While a worker slot is free, work goes
out at once (one body per task: lowest latency); while every worker is busy, bodies pile up and
leave as one task of up to ``max_batch`` bodies, which cuts the per-task cost of
``ProcessPoolExecutor`` (queue threads, pickling, wake-ups) about five-fold under load. A worker
that dies (OOM kill, a decoder segfault) costs a new pool; its bodies are retried once, each
alone, so one poisonous image fails by itself.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

from clipcrawl.filters.images.resize import ResizedImage, ResizeOptions, resize_image

_OPTS: ResizeOptions | None = None
CRASHED = "decoder process crashed on this image"


def _init_worker(opts: ResizeOptions) -> None:
    global _OPTS
    _OPTS = opts
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # this process is ours: max_decode_pixels replaces Pillow's bomb limit


def _resize_batch(bodies: list[bytes]) -> list[ResizedImage]:
    assert _OPTS is not None, "worker not initialised"
    return [resize_image(b, _OPTS) for b in bodies]


class DecodePool:
    """A process pool of ``workers`` decoders; ``await resize(body)`` from one event loop."""

    def __init__(self, opts: ResizeOptions, workers: int, max_batch: int = 8, tasks_per_worker: int = 2) -> None:
        self.opts, self.workers, self.max_batch = opts, workers, max_batch
        self.max_tasks = workers * tasks_per_worker
        self._queue: deque[tuple[bytes, asyncio.Future[ResizedImage], bool]] = deque()
        self._running = 0
        self._executor: ProcessPoolExecutor | None = None

    def _new_executor(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.opts,))

    def start(self) -> DecodePool:
        if self._executor is None:
            self._executor = self._new_executor()
        return self

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def resize(self, body: bytes) -> ResizedImage:
        fut: asyncio.Future[ResizedImage] = asyncio.get_running_loop().create_future()
        self._queue.append((body, fut, False))
        self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        assert self._executor is not None, "DecodePool.start() first"
        loop = asyncio.get_running_loop()
        while self._queue and self._running < self.max_tasks:
            batch = [self._queue.popleft()]
            while self._queue and len(batch) < self.max_batch and not batch[0][2] and not self._queue[0][2]:
                batch.append(self._queue.popleft())
            executor = self._executor
            self._running += 1
            task = loop.run_in_executor(executor, _resize_batch, [b for b, _, _ in batch])
            task.add_done_callback(partial(self._done, batch, executor))

    def _done(self, batch: list, executor: ProcessPoolExecutor, task: asyncio.Future) -> None:
        self._running -= 1
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, BrokenProcessPool) or task.cancelled():
            if self._executor is executor:
                from clipcrawl.pipelines.progress import log

                log.warning("an image decoder process died; restarting the pool")
                self._executor = self._new_executor()
                executor.shutdown(wait=False, cancel_futures=True)
            for body, fut, retried in batch:
                if fut.done():
                    continue
                if retried:
                    fut.set_result(ResizedImage(error=CRASHED))
                else:
                    self._queue.appendleft((body, fut, True))  # alone, once
        elif exc is not None:
            for _, fut, _ in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for (_, fut, _), res in zip(batch, task.result()):
                if not fut.done():
                    fut.set_result(res)
        self._dispatch()
