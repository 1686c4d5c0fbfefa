"""Engines schedule shards; they never know what a stage does.

``map_ordered(worker, jobs)`` runs a :class:`~clipcrawl.pipelines.shardloop.ShardWorker` over every job
and yields ``(job, result)`` in job order, so the driver publishes shards in order while later ones are
still processing. :class:`LocalEngine` runs in this process (stages set up once) and writes each shard
on a writer thread while the next one is computed (passes that ask for it). :class:`RayEngine` runs one
copy of the worker per Ray actor (each sets its stages up once: HTTP session, CLIP model) across a
cluster; ``SparkEngine`` (:mod:`clipcrawl.pipelines.sparkengine`) runs each shard as a Spark task. Jobs and results are small (paths, or one shard's stats); images travel through the dataset's
storage (a shared disk or S3).

Ray specifics:

* **Resources**: a stage declares what it needs (:meth:`Stage.needs`, e.g. CLIP ``{"gpu": 0.25}``).
  Actors of a pass whose stages want a GPU ask for ``num_gpus`` (``gpus_per_actor``, default the
  stages' largest wish; fractional allowed) **when the cluster has GPUs**, else CPU only; the stage
  then finds CUDA on its actor (``device: auto``). Every actor reports its node and assigned resources.
* **Retries**: an ordered scheduler of its own (not ``ActorPool``): when an actor dies mid-shard
  (killed, OOM, node lost) its shard goes to a fresh actor, up to ``retries`` times, then becomes a
  :class:`~clipcrawl.pipelines.shardloop.ShardFailure` naming the reason (the command exits 1).
  Shard files are written atomically, so a half-written shard is simply written again. A bug (an
  exception raised by a stage) is not retried: it propagates, as on the local engine.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from clipcrawl.schemas.config import ConfigError

log = logging.getLogger("clipcrawl.engine")

#: environment variables the driver hands to its actors (crash-test failpoints, offline mode)
FORWARDED_ENV = ("CLIPCRAWL_", "HF_HUB_OFFLINE")


class _LocalCounter:
    def __init__(self, start: int) -> None:
        self._next, self._lock = itertools.count(start), threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return next(self._next)


class LocalEngine:
    name = "local"

    def counter(self, start: int = 0) -> Callable[[], int]:
        """Unique increasing ints for every worker of a pass (e.g. output file ids)."""
        return _LocalCounter(start)

    def map_ordered(self, worker: Any, jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        if worker.publish_behind:
            yield from _publish_behind(worker, jobs)
            return
        writer = ThreadPoolExecutor(1, thread_name_prefix="shard-writer") if worker.write_behind else None
        pending: tuple[Any, Future] | None = None
        try:
            for job in jobs:
                out = worker.compute(job)
                if writer is None:
                    yield job, worker.write(job, out)
                    continue
                if pending is not None:  # at most one shard waits for the disk; its errors surface here
                    yield pending[0], pending[1].result()
                pending = (job, writer.submit(worker.write, job, out))
            if pending is not None:
                yield pending[0], pending[1].result()
        finally:
            if writer is not None:
                writer.shutdown(wait=True)
            worker.close()


def _publish_behind(worker: Any, jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    """Streamed passes: the shards are computed and written on one thread of their own, so the caller's
    publish of shard i (``run``: dedup + shard files) overlaps the download of shard i + 1. At most one
    finished shard waits for its publish. An error on either side stops both; an interrupted caller
    leaves the thread to the process exit (shard files are atomic; the next run removes temp files)."""
    import queue

    results: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: tuple[str, Any, Any]) -> None:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for job in jobs:
                if stop.is_set():
                    return
                put(("ok", job, worker(job)))
            put(("end", None, None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            put(("error", None, e))

    t = threading.Thread(target=produce, name="shard-ahead", daemon=True)
    t.start()
    finished = False
    try:
        while True:
            kind, job, value = results.get()
            if kind == "end":
                finished = True
                return
            if kind == "error":
                raise value
            yield job, value
    finally:
        stop.set()
        t.join(timeout=None if finished else 1.0)
        if not t.is_alive():  # else it is mid-shard, using the stages: the process exit ends it
            worker.close()


class _CounterActor:
    def __init__(self, start: int) -> None:
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value - 1


class _RayCounter:
    """A picklable handle on a counter actor: every actor that calls it gets a different int."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __call__(self) -> int:
        import ray

        return ray.get(self.handle.next.remote())


class _RayActor:
    """One worker copy. For a pass that writes behind, Ray runs two calls at once on it (threads):
    one computes the next shard while the other writes the previous one, never two of either (as the
    local engine's writer thread)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.computing, self.writing = threading.Lock(), threading.Lock()

    def info(self) -> dict[str, Any]:
        """Where this actor runs and what Ray gave it (tests and the run log read it)."""
        import ray

        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
                "resources": dict(ctx.get_assigned_resources()),
                "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def run(self, job: Any) -> Any:
        with self.computing:
            out = self.worker.compute(job)
        with self.writing:
            return self.worker.write(job, out)

    def close(self) -> None:
        self.worker.close()


def stage_gpus(worker: Any) -> float:
    """The largest GPU share any stage of the worker's pass asks for (0: CPU only)."""
    stages = getattr(getattr(worker, "p", None), "stages", None) or []
    return max((float(s.needs().get("gpu", 0.0)) for s in stages if hasattr(s, "needs")), default=0.0)


class RayEngine:
    """Shard workers as Ray actors. ``address``: ``auto``, ``host:port``, ``ray://host:10001`` or ``None``
    (``RAY_ADDRESS`` or a local Ray instance); a process already connected to another cluster than
    ``address`` is refused (ConfigError, see rayconnect.py). ``gpus_per_actor``: ``None`` = what the
    stages declare."""

    name = "ray"

    def __init__(self, address: str | None = None, actors: int | None = None, cpus_per_actor: float = 1.0,
                 gpus_per_actor: float | None = None, node_ip: str | None = None, retries: int = 3) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.actors, self.cpus, self.gpus = actors, cpus_per_actor, gpus_per_actor
        self.node_ip, self.retries = node_ip, retries
        self.actor_info: list[dict[str, Any]] = []  # one entry per actor started (node, resources)
        self.job_nodes: Counter[str] = Counter()  # node IP -> shards completed there
        self._helpers: list[Any] = []  # counter actors, ended with the pass

    def _init(self) -> Any:
        try:
            import ray
        except ImportError:
            raise ConfigError("engine 'ray' needs Ray: pip install 'clipcrawl[ray]'") from None
        if ray.is_initialized():  # the caller's own connection, or an earlier engine's: the same cluster?
            from clipcrawl.pipelines.rayconnect import check_connected

            check_connected(ray, self.address)
        else:
            kw: dict[str, Any] = {"_node_ip_address": self.node_ip} if self.node_ip else {}
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1", **env}}, **kw)
        return ray

    def counter(self, start: int = 0) -> Callable[[], int]:
        """Unique increasing ints across every actor of the next pass (one small actor, no CPU)."""
        ray = self._init()
        handle = ray.remote(num_cpus=0)(_CounterActor).remote(start)
        self._helpers.append(handle)
        return _RayCounter(handle)

    def resources(self, worker: Any) -> tuple[float, float]:
        """``(num_cpus, num_gpus)`` for this pass's actors on the connected cluster."""
        import ray

        want = stage_gpus(worker) if self.gpus is None else self.gpus
        has = float(ray.cluster_resources().get("GPU", 0.0))
        return self.cpus, (min(want, has) if want > 0 and has > 0 else 0.0)

    def map_ordered(self, worker: Any, jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        it = iter(jobs)  # pulled lazily: the driver holds a window of jobs, not the whole input
        first = list(itertools.islice(it, 1))
        if not first:  # nothing to do: no cluster needed (counters made for this pass are ended)
            if self._helpers:
                import ray

                for h in self._helpers:
                    ray.kill(h)
                self._helpers.clear()
            worker.close()
            return
        ray = self._init()
        cpus, gpus = self.resources(worker)
        free = ray.available_resources()
        n = self.actors or max(1, int(free.get("CPU", 1) // cpus) if cpus else 1)
        if gpus and not self.actors:
            n = min(n, max(1, int(free.get("GPU", 0) // gpus)))
        first += itertools.islice(it, n - 1)  # no more actors than shards
        n = min(n, len(first))
        slots = 2 if worker.write_behind else 1
        cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_task_retries=0,
                         max_concurrency=slots)(_RayActor)
        ref = ray.put(worker)
        log.info("ray: %d actor(s), %s CPU + %s GPU each", n, cpus, gpus)
        sched = _Scheduler(ray, lambda: cls.remote(ref), n, self.retries, worker, slots)
        try:
            yield from sched.run(itertools.chain(first, it))
        finally:
            self.actor_info += sched.infos()
            self.job_nodes.update(sched.done_on)
            sched.stop()
            for h in self._helpers:
                ray.kill(h)
            self._helpers.clear()
            worker.close()
            if sched.done_on:
                log.info("ray: shards per node: %s", dict(sched.done_on))


_DIED = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
         "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError")


class _Scheduler:
    """Ordered map over a set of actors: ``slots`` jobs per actor in flight, results yielded in job
    order (at most ``window`` jobs ahead of the oldest unfinished one), dead actors replaced and
    their jobs resubmitted."""

    def __init__(self, ray: Any, new_actor: Any, n: int, retries: int, worker: Any, slots: int = 1) -> None:
        self.ray, self.new_actor, self.retries, self.worker, self.slots = ray, new_actor, retries, worker, slots
        self.died = tuple(getattr(ray.exceptions, name) for name in _DIED if hasattr(ray.exceptions, name))
        self.actors: list[Any] = [new_actor() for _ in range(n)]
        self.where: dict[Any, str] = {}  # actor -> node IP (asked once, with its first job)
        self.info_refs: dict[Any, Any] = {a: a.info.remote() for a in self.actors}
        self.done_on: Counter[str] = Counter()
        self._infos: list[dict[str, Any]] = []

    def _node(self, actor: Any) -> str:
        if actor not in self.where:
            try:
                info = self.ray.get(self.info_refs.pop(actor))
            except self.died:
                return "?"
            self._infos.append(info)
            self.where[actor] = info["node_ip"]
        return self.where[actor]

    def infos(self) -> list[dict[str, Any]]:
        for a in list(self.info_refs):
            self._node(a)
        return self._infos

    def run(self, source: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Jobs are pulled from ``source`` only as the window moves on (retried ones go first)."""
        from clipcrawl.pipelines.shardloop import ShardFailure

        it = iter(source)
        jobs: dict[int, Any] = {}  # pulled and not yet yielded
        pulled, exhausted = 0, False
        retry: list[int] = []  # shards of dead actors, redone before later jobs
        idle = [a for _ in range(self.slots) for a in self.actors]  # first jobs spread over actors
        window = max(2 * self.slots * len(self.actors), 4)
        flying: dict[Any, tuple[int, Any]] = {}
        done: dict[int, Any] = {}
        attempts: Counter[int] = Counter()
        nxt = 0
        while True:
            while idle:
                if retry and retry[0] < nxt + window:
                    i = retry.pop(0)
                elif not exhausted and pulled < nxt + window:
                    try:
                        jobs[pulled] = next(it)
                    except StopIteration:
                        exhausted = True
                        continue
                    i, pulled = pulled, pulled + 1
                else:
                    break
                a = idle.pop()
                flying[a.run.remote(jobs[i])] = (i, a)
            if not flying:
                break
            ready, _ = self.ray.wait(list(flying), num_returns=1)
            for r in ready:
                i, a = flying.pop(r)
                try:
                    done[i] = self.ray.get(r)
                except self.died as e:
                    attempts[i] += 1
                    name = self.worker.p.job_name(jobs[i]) if hasattr(self.worker, "p") else str(jobs[i])
                    log.warning("ray: worker died on shard %s (attempt %d): %s", name, attempts[i],
                                " ".join(str(e).split())[:600])  # the cause (exit code, OOM kill...) too
                    self._replace(a, idle)
                    if attempts[i] > self.retries:
                        done[i] = ShardFailure(name, f"worker died {attempts[i]} times: {type(e).__name__}")
                    else:
                        retry = sorted((*retry, i))  # to a fresh actor, before later jobs
                    continue
                self.done_on[self._node(a)] += 1
                if a in self.actors:  # not replaced meanwhile (its other job saw it die)
                    idle.append(a)
            while nxt in done:
                yield jobs.pop(nxt), done.pop(nxt)
                nxt += 1

    def _replace(self, dead: Any, idle: list[Any]) -> None:
        if dead not in self.actors:  # its other job's failure already replaced it
            return
        self.ray.kill(dead)
        self.actors.remove(dead)
        self.info_refs.pop(dead, None)
        idle[:] = [a for a in idle if a is not dead]
        fresh = self.new_actor()
        self.info_refs[fresh] = fresh.info.remote()
        self.actors.append(fresh)
        idle.extend([fresh] * self.slots)

    def stop(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):  # teardown is best effort; the actor is killed anyway
                self.ray.get(a.close.remote(), timeout=10)
            self.ray.kill(a)


def make_engine(name: str, **kw: Any) -> Any:
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return RayEngine(**kw)
    if name == "spark":  # clipcrawl/pipelines/sparkengine.py (pyspark imported there, lazily)
        from clipcrawl.pipelines.sparkengine import SparkEngine

        return SparkEngine(**kw)
    raise ConfigError(f"unknown engine {name!r} (fix: use local, ray or spark)")
