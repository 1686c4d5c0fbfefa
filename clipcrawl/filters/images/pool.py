"""Decode/resize on worker threads (default) or processes, fed from an asyncio loop, with adaptive batching.

Threads (``decoder="threads"``): Pillow releases the GIL while it decodes, resamples and encodes (~95% of
an image's decode/resize time), so two threads keep two cores busy without the per-image cost of
processes (pickling bodies through pipes, the workers' own imports): 15-20% less CPU per image and less
memory on the download benchmark (bench/RESULTS.md). Processes (``decoder="processes"``) isolate the
decoder: an image that crashes it (a segfault in a codec) fails alone instead of ending the run.

``await pool.resize(body)`` queues one downloaded body. While a worker slot is free, work goes
out at once (one body per task: lowest latency); while every worker is busy, bodies pile up and
leave as one task of up to ``max_batch`` bodies, which cuts the per-task cost of
``ProcessPoolExecutor`` (queue threads, pickling, wake-ups) about five-fold under load. A worker
process that dies (OOM kill, a decoder segfault) costs a new pool; its bodies are retried once, each
alone, so one poisonous image fails by itself.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

from clipcrawl.base.workers import ignore_sigint, quiet_context
from clipcrawl.filters.images.resize import ResizedImage, ResizeOptions, resize_image

_OPTS: ResizeOptions | None = None
CRASHED = "decoder process crashed on this image"
DECODERS = ("threads", "processes")


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
    warnings.simplefilter("ignore")  # corrupt EXIF, bomb warnings...: resize_image's own checks report


def _quiet_pillow() -> None:
    """Decoding on threads of this process: Pillow's warnings off (``warnings.catch_warnings`` per image is
    not thread-safe) and its bomb limit off, as in a decoder process: ``max_decode_pixels``, checked on the
    header before any decode, replaces it (with the header's size in the message)."""
    from PIL import Image

    warnings.filterwarnings("ignore", module=r"PIL\b")
    Image.MAX_IMAGE_PIXELS = None


def _resize_batch(bodies: list, opts: ResizeOptions | None = None) -> list[ResizedImage]:
    """``bodies``: bytes, or ``(bytes, bbox_list)`` for images to blur; ``opts``: the worker's when None."""
    opts = opts or _OPTS
    assert opts is not None, "worker not initialised"
    return [resize_image(b[0], opts, b[1], quiet=False) if isinstance(b, tuple) else resize_image(b, opts, quiet=False)
            for b in bodies]


class DecodePool:
    """``workers`` decoder threads or processes (``decoder``); ``await resize(body)`` from one event loop."""

    def __init__(self, opts: ResizeOptions, workers: int, max_batch: int = 8, tasks_per_worker: int = 2,
                 decoder: str = "threads") -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
        self.opts, self.workers, self.max_batch, self.decoder = opts, workers, max_batch, decoder
        self.max_tasks = workers * tasks_per_worker
        self._queue: deque[tuple[bytes | tuple, asyncio.Future[ResizedImage], bool]] = deque()
        self._running = 0
        self.restarts = 0
        self._executor: Executor | None = None

    def _new_executor(self) -> Executor:
        if self.decoder == "threads":
            _quiet_pillow()
            return ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
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

    def _replace(self, broken: Executor) -> None:
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
                bodies = [b for b, _, _ in batch]
                cfut = (executor.submit(_resize_batch, bodies, self.opts) if self.decoder == "threads"
                        else executor.submit(_resize_batch, bodies))
            except (BrokenProcessPool, RuntimeError):  # broken before we noticed: new pool, same batch
                self._queue.extendleft(reversed(batch))
                self._replace(executor)
                continue
            self._running += 1
            task = asyncio.wrap_future(cfut, loop=loop)
            task.add_done_callback(partial(self._done, batch, executor))

    def _done(self, batch: list, executor: Executor, task: asyncio.Future) -> None:
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
