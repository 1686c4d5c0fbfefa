"""The one shard loop: every pass is "read shard -> stages -> write shard", driven by an engine.

A :class:`ShardPass` says what one shard's work is, in four steps:

* ``read(job) -> table`` (worker): the shard's rows. A file that cannot be read (a truncated tar, a
  Parquet that is not one) makes a :class:`ShardFailure` naming the file, not a crash: the other
  shards go on, nothing is rewritten from partial data, and the command reports it and exits 1.
* ``stages`` (worker): :class:`~clipcrawl.base.stage.Stage` objects applied in order (``stages_for``
  may pick fewer for a shard that needs less, e.g. one already scored) (set up once per
  worker; a failpoint ``stage.<name>`` after each, for crash tests; stages that report progress get a bar).
* ``write(job, table) -> result`` (worker): the shard's files, atomically, stats last. The local engine
  runs it on a writer thread while the next shard is read and processed (at most one write pending).
* ``streaming = True``: the shard flows through in chunks of ``chunk_rows`` rows instead of as one
  table, so memory holds a few chunks, not a shard: each stage maps chunks (a stage with
  ``iter_process(table, chunk_rows)``, like the download, keeps its own pipeline full across chunk
  boundaries and yields finished chunks in row order), and ``write(job, chunks)`` gets an iterator of
  chunks, consumed on a writer thread while the next chunks are computed (at most ``write_queue``
  waiting). A failure on either side stops both; the writer must leave no finished-looking shard.
* ``publish(job, result)`` (driver, in job order): what must happen one shard at a time in order
  (the dataset manifest, a global dedup index, the summary).

:func:`run_pass` runs a pass over its jobs on an engine (:mod:`clipcrawl.pipelines.engine`: local or
Ray) and returns the failures. ``download``, ``score``, ``dedup``, ``reshard`` and ``run`` are passes.
"""

from __future__ import annotations

import json
import logging
import queue
import tarfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from clipcrawl.base.failpoints import failpoint
from clipcrawl.base.progress import Progress
from clipcrawl.base.stage import Stage
from clipcrawl.schemas.config import ConfigError

log = logging.getLogger("clipcrawl.shards")

#: what a broken or unreadable input file raises while a shard is read (not infrastructure failures)
UNREADABLE = (tarfile.TarError, pa.ArrowException, EOFError, json.JSONDecodeError, UnicodeDecodeError,
              zlib.error, FileNotFoundError, IsADirectoryError, ValueError)


#: what reading a broken input file raises while a shard is written (never a failure of the write itself)
BROKEN_INPUT = (tarfile.TarError, EOFError, zlib.error)


@dataclass(frozen=True)
class ShardFailure:
    """A shard the pass could not read: its name and what was wrong (``file: error``)."""

    shard: str
    error: str


class ShardPass:
    """One pass over shards; see the module doc. Subclasses set ``name`` and implement ``jobs``,
    ``read`` and ``write`` (``stages``, ``publish`` and ``finish`` are optional)."""

    name: str = "pass"
    #: run ``write`` on the local engine's writer thread (overlaps disk with the next shard's work)
    write_behind: bool = False
    #: stream shards through the stages and ``write`` in chunks of ``chunk_rows`` rows (see the module doc)
    streaming: bool = False
    chunk_rows: int = 256
    write_queue: int = 2

    def __init__(self) -> None:
        self.stages: list[Stage] = []

    def job_name(self, job: Any) -> str:
        return str(getattr(job, "name", job))

    # ---------------------------------------------------------------- worker side
    def read(self, job: Any) -> pa.Table:
        raise NotImplementedError

    def stages_for(self, job: Any, table: pa.Table) -> list[Stage]:
        """The stages this shard needs (default: all; a resumed or already-done shard may need none)."""
        return self.stages

    def write(self, job: Any, table: pa.Table) -> Any:
        raise NotImplementedError

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Per-worker state beyond the stages (they set themselves up on first use)."""

    def teardown(self) -> None:
        for s in self.stages:
            s.teardown()

    # ---------------------------------------------------------------- driver side
    def publish(self, job: Any, result: Any) -> None:  # noqa: B027 - optional hook
        """In job order, on the driver."""


@dataclass
class _Bars:
    """Progress of the stages that report it, one bar per stage over the whole pass."""

    bars: dict[str, Progress] = field(default_factory=dict)

    def attach(self, stage: Stage) -> None:
        if not stage.reports_progress:
            return
        if stage.name not in self.bars:
            self.bars[stage.name] = Progress(stage.name, unit="rows").__enter__()
        stage.progress = self.bars[stage.name]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.__exit__(None, None, None)
        self.bars.clear()


class ShardWorker:
    """What an engine runs per shard: ``compute`` (read + stages) then ``write``. Picklable: a Ray actor
    gets a copy, whose stages set themselves up there."""

    def __init__(self, p: ShardPass) -> None:
        self.p = p
        self._bars = _Bars()
        self._ready = False

    def __getstate__(self) -> dict[str, Any]:
        return {"p": self.p}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.p, self._bars, self._ready = state["p"], _Bars(), False

    @property
    def publish_behind(self) -> bool:
        """The local engine computes the next shard while the driver publishes this one (streamed passes)."""
        return self.p.streaming

    @property
    def write_behind(self) -> bool:
        return self.p.write_behind and not self.p.streaming  # a streamed shard overlaps its own writes

    def compute(self, job: Any) -> pa.Table | ShardFailure:
        if not self._ready:
            self.p.setup()
            self._ready = True
        try:
            table = self.p.read(job)
        except ConfigError:
            raise
        except UNREADABLE as e:
            return ShardFailure(self.p.job_name(job), f"{type(e).__name__}: {e}")
        if self.p.streaming:
            return self._chunks(job, table)
        for stage in self.p.stages_for(job, table):
            self._bars.attach(stage)
            table = stage(table)
            failpoint(f"stage.{stage.name}")
        return table

    def _chunks(self, job: Any, table: pa.Table) -> Iterator[pa.Table]:
        """Stages before the first one with ``iter_process`` see the whole (input) table, lazily; from
        there on, chunks."""
        chunks: Iterator[pa.Table] = iter([table])
        chunked = False
        stages = self.p.stages_for(job, table)
        for k, stage in enumerate(stages):
            self._bars.attach(stage)
            pipeline = hasattr(stage, "iter_process")
            chunked = chunked or pipeline
            chunks = _map_chunks(stage, chunks, self.p.chunk_rows if chunked else None)
            if pipeline and k + 1 < len(stages):  # keep its I/O going while the next stages compute
                chunks = _ahead(chunks, self.p.write_queue)
        return chunks

    def write(self, job: Any, out: Any) -> Any:
        if isinstance(out, ShardFailure):
            return out
        try:
            if self.p.streaming:
                return _write_streamed(self.p, job, out)
            return self.p.write(job, out)
        except BROKEN_INPUT as e:  # an input file (a tar being rewritten) broke: each output file is atomic
            return ShardFailure(self.p.job_name(job), f"{type(e).__name__}: {e}")

    def __call__(self, job: Any) -> Any:
        return self.write(job, self.compute(job))

    def close(self) -> None:
        self._bars.close()
        self.p.teardown()


def _map_chunks(stage: Stage, tables: Iterator[pa.Table], n: int | None) -> Iterator[pa.Table]:
    """``stage`` over ``tables``, in chunks of at most ``n`` rows (``None``: whole tables)."""
    for t in tables:
        if n is not None and hasattr(stage, "iter_process"):
            stage.ready()
            for out in stage.iter_process(t, n):
                failpoint(f"stage.{stage.name}")
                yield out
            continue
        step = n or max(t.num_rows, 1)
        for start in range(0, max(t.num_rows, 1), step):
            yield stage(t.slice(start, step))
            failpoint(f"stage.{stage.name}")


_END, _ABORT = object(), object()


def _ahead(chunks: Iterator[pa.Table], depth: int) -> Iterator[pa.Table]:
    """``chunks`` computed on a thread of their own, at most ``depth`` ahead of the consumer: a stage
    with its own pipeline (the download's event loop) keeps fetching while later stages (CLIP) compute
    on the caller's thread. Errors reach the consumer; a consumer that stops stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        q.put(("chunk", chunk), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            item: tuple[str, Any] = ("end", None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            item = ("error", e)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the producer's own thread ends its generator (cancels in-flight fetches)
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    t = threading.Thread(target=produce, name="stage-ahead", daemon=True)
    t.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        t.join()


class _Aborted(Exception):
    """The producer of a streamed shard failed: the writer must discard what it wrote."""


def _drain(q: queue.Queue) -> Iterator[pa.Table]:
    while True:
        item = q.get()
        if item is _END:
            return
        if item is _ABORT:
            raise _Aborted("the shard's chunks stopped coming")
        yield item


def _put(q: queue.Queue, item: Any, consumer: threading.Thread) -> bool:
    """Put ``item`` unless the consumer has ended (then False)."""
    while consumer.is_alive():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _write_streamed(p: ShardPass, job: Any, chunks: Iterator[pa.Table]) -> Any:
    """Compute ``chunks`` here (the stages' event loops stay on this thread) while ``p.write`` consumes
    them on a writer thread; a bounded queue between the two holds at most ``p.write_queue`` chunks."""
    q: queue.Queue = queue.Queue(maxsize=max(1, p.write_queue))
    box: dict[str, Any] = {}

    def consume() -> None:
        try:
            box["result"] = p.write(job, _drain(q))
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            box["error"] = e

    writer = threading.Thread(target=consume, name=f"{p.name}-writer", daemon=True)
    writer.start()
    try:
        for chunk in chunks:
            if not _put(q, chunk, writer):
                break  # the writer failed: its error is raised below
        _put(q, _END, writer)
    except BaseException:
        _put(q, _ABORT, writer)
        writer.join()
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    writer.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def run_pass(p: ShardPass, jobs: Iterable[Any], engine: Any = None, *, total: int | None = None,
             unit: str = "shard", bar: bool = True) -> list[ShardFailure]:
    """Run ``p`` over ``jobs`` on ``engine`` (default: this process); ``publish`` each result in job
    order. Returns the shards that could not be read (each also logged as an error). ``bar=False``: no
    shard bar or log lines (a pass that reports its progress itself, e.g. img2dataset mode)."""
    from clipcrawl.pipelines.engine import LocalEngine

    engine = engine or LocalEngine()
    failures: list[ShardFailure] = []
    if total is None and hasattr(jobs, "__len__"):
        total = len(jobs)  # type: ignore[arg-type]
    with Progress(p.name, total=total, unit=unit, enabled=bar) as shards:
        for job, result in engine.map_ordered(ShardWorker(p), jobs):
            if isinstance(result, ShardFailure):
                log.error("%s: shard %s skipped, unreadable: %s", p.name, result.shard, result.error)
                failures.append(result)
            else:
                p.publish(job, result)
            shards.update(1)
    return failures


def failure_lines(failures: list[ShardFailure]) -> list[str]:
    return [f"shard {f.shard}: {f.error}" for f in failures]
