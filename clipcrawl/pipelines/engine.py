"""Engines schedule shards; they never know what a stage does.

``map_ordered(worker, jobs)`` runs a :class:`~clipcrawl.pipelines.shardloop.ShardWorker` over every job
and yields ``(job, result)`` in job order, so the driver publishes shards in order while later ones are
still processing. :class:`LocalEngine` runs in this process (stages set up once) and writes each shard
on a writer thread while the next one is computed (passes that ask for it). :class:`RayEngine` runs one
copy of the worker per Ray actor (each sets its stages up once: HTTP session, CLIP model) across a
cluster; results come back in order through an ``ActorPool``. Jobs and results are small (paths, or one
shard's rows); images travel through the dataset's storage (a shared disk or S3).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from clipcrawl.schemas.config import ConfigError


class LocalEngine:
    name = "local"

    def map_ordered(self, worker: Any, jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
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


class _RayActor:
    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def run(self, job: Any) -> Any:
        return self.worker(job)


class RayEngine:
    """Shard workers as Ray actors. ``address``: ``auto``, ``ray://host:10001`` or ``None``
    (``RAY_ADDRESS`` or a local Ray instance)."""

    name = "ray"

    def __init__(self, address: str | None = None, actors: int | None = None, cpus_per_actor: float = 1.0,
                 gpus_per_actor: float = 0.0, node_ip: str | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.actors, self.cpus, self.gpus = actors, cpus_per_actor, gpus_per_actor
        self.node_ip = node_ip

    def map_ordered(self, worker: Any, jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise ConfigError("engine 'ray' needs Ray: pip install 'clipcrawl[ray]'") from None
        jobs = list(jobs)
        if not jobs:
            worker.close()
            return
        if not ray.is_initialized():
            kw: dict[str, Any] = {"_node_ip_address": self.node_ip} if self.node_ip else {}
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}}, **kw)
        n = self.actors or max(1, int(ray.available_resources().get("CPU", 1) // self.cpus))
        n = min(n, len(jobs))
        cls = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus)(_RayActor)
        actors = [cls.remote(worker) for _ in range(n)]
        try:
            results = ActorPool(actors).map(lambda a, job: a.run.remote(job), jobs)
            yield from zip(jobs, results)
        finally:
            for a in actors:
                ray.kill(a)
            worker.close()


def make_engine(name: str, **kw: Any) -> LocalEngine | RayEngine:
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return RayEngine(**kw)
    raise ConfigError(f"unknown engine {name!r} (fix: use local or ray)")
