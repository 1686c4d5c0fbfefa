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
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

from clipcrawl.base.workers import ignore_sigint, quiet_context
from clipcrawl.filters.images.resize import ResizedImage, ResizeOptions, resize_image

_OPTS: ResizeOptions | None = None
CRASHED = "decoder process crashed on this image"


def _exit_with_parent(parent: int) -> None:
    """Decoders must not outlive a parent that was killed (kill -9): they would hold its pipes."""
    import os
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(opts: ResizeOptions, parent: int | None = None) -> None:
    global _OPTS
    ignore_sigint()  # Ctrl-C is the parent's: it stops and shuts this pool down
    _OPTS = opts
    if parent is not None:
        _exit_with_parent(parent)
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # this process is ours: max_decode_pixels replaces Pillow's bomb limit


def _resize_batch(bodies: list) -> list[ResizedImage]:
    """``bodies``: bytes, or ``(bytes, bbox_list)`` for images to blur."""
    assert _OPTS is not None, "worker not initialised"
    return [resize_image(b[0], _OPTS, b[1]) if isinstance(b, tuple) else resize_image(b, _OPTS) for b in bodies]


class DecodePool:
    """A process pool of ``workers`` decoders; ``await resize(body)`` from one event loop."""

    def __init__(self, opts: ResizeOptions, workers: int, max_batch: int = 8, tasks_per_worker: int = 2) -> None:
        self.opts, self.workers, self.max_batch = opts, workers, max_batch
        self.max_tasks = workers * tasks_per_worker
        self._queue: deque[tuple[bytes | tuple, asyncio.Future[ResizedImage], bool]] = deque()
        self._running = 0
        self.restarts = 0
        self._executor: ProcessPoolExecutor | None = None

    def _new_executor(self) -> ProcessPoolExecutor:
        ctx = quiet_context("spawn")  # never fork a process that runs an event loop; SIGINT blocked from birth
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(self.opts, os.getpid()))

    def start(self) -> DecodePool:
        if self._executor is None:
            self._executor = self._new_executor()
        return self

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def resize(self, body: bytes, bbox: list | None = None) -> ResizedImage:
        """``bbox``: boxes to blur (img2dataset's ``bbox_col``: ``[[x0, y0, x1, y1], ...]`` fractions)."""
        fut: asyncio.Future[ResizedImage] = asyncio.get_running_loop().create_future()
        self._queue.append(((body, bbox) if bbox is not None else body, fut, False))
        self._dispatch()
        return await fut

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._executor is broken:
            from clipcrawl.base.progress import log

            log.warning("an image decoder process died; restarting the pool")
            self.restarts += 1
            self._executor = self._new_executor()
            broken.shutdown(wait=False, cancel_futures=True)

    def _dispatch(self) -> None:
        assert self._executor is not None, "DecodePool.start() first"
        loop = asyncio.get_running_loop()
        while self._queue and self._running < self.max_tasks:
            batch = [self._queue.popleft()]
            while self._queue and len(batch) < self.max_batch and not batch[0][2] and not self._queue[0][2]:
                batch.append(self._queue.popleft())
            executor = self._executor
            try:
                cfut = executor.submit(_resize_batch, [b for b, _, _ in batch])
            except (BrokenProcessPool, RuntimeError):  # broken before we noticed: new pool, same batch
                self._queue.extendleft(reversed(batch))
                self._replace(executor)
                continue
            self._running += 1
            task = asyncio.wrap_future(cfut, loop=loop)
            task.add_done_callback(partial(self._done, batch, executor))

    def _done(self, batch: list, executor: ProcessPoolExecutor, task: asyncio.Future) -> None:
        self._running -= 1
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, BrokenProcessPool) or task.cancelled():
            self._replace(executor)
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
