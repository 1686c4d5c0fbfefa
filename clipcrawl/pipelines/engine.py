"""Engines schedule shards; they never know what a stage does.

``map_ordered(worker, jobs)`` applies a picklable callable to every job and yields the results
in job order, so the driver can publish shards in order while later ones are still processing.
:class:`LocalEngine` runs in this process (stages set up once). :class:`RayEngine` runs one
copy of the worker per Ray actor (each sets its stages up once: HTTP session, CLIP model) across
a cluster; its results come back in order through an ``ActorPool``. Jobs and results are small
(paths), data travels through the dataset's storage (a shared disk or S3).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from clipcrawl.schemas.config import ConfigError


class Worker(Protocol):
    def __call__(self, job: Any) -> Any: ...
    def close(self) -> None: ...


class LocalEngine:
    name = "local"

    def map_ordered(self, worker: Worker, jobs: Sequence[Any]) -> Iterator[Any]:
        try:
            for job in jobs:
                yield worker(job)
        finally:
            worker.close()


class _RayActor:
    def __init__(self, worker: Callable[[Any], Any]) -> None:
        self.worker = worker

    def run(self, job: Any) -> Any:
        return self.worker(job)


class RayEngine:
    """Phase-A workers as Ray actors. ``address``: ``auto``, ``ray://host:10001`` or ``None``
    (``RAY_ADDRESS`` or a local Ray instance)."""

    name = "ray"

    def __init__(self, address: str | None = None, actors: int | None = None, cpus_per_actor: float = 1.0,
                 gpus_per_actor: float = 0.0, node_ip: str | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.actors, self.cpus, self.gpus = actors, cpus_per_actor, gpus_per_actor
        self.node_ip = node_ip

    def map_ordered(self, worker: Worker, jobs: Sequence[Any]) -> Iterator[Any]:
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise ConfigError("engine 'ray' needs Ray: pip install 'clipcrawl[ray]'") from None
        if not jobs:
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
            yield from ActorPool(actors).map(lambda a, job: a.run.remote(job), list(jobs))
        finally:
            for a in actors:
                ray.kill(a)


def make_engine(name: str, **kw: Any) -> LocalEngine | RayEngine:
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return RayEngine(**kw)
    raise ConfigError(f"unknown engine {name!r} (fix: use local or ray)")
