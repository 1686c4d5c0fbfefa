"""The Spark engine: a pass's shards as Spark tasks (img2dataset's ``distributor="pyspark"``, ``--engine spark``).

Like img2dataset's ``pyspark_distributor``, it uses the process's running SparkContext (a notebook's, a
``spark-submit`` job's) or starts one of its own -- ``local[N]`` or the ``master`` given (``spark://host:7077``,
``yarn``, ``k8s://...``) -- and stops only the one it started. Each shard is one Spark job of one task
(``sc.parallelize([job], 1).mapPartitions(...)``), at most ``parallelism`` of them in flight (default: the
context's ``defaultParallelism``, its cores), submitted from driver threads: results come back in job order for
``publish`` while later shards run, and a slow shard never holds the others back (img2dataset's batches wait for
their slowest shard).

* **Executors** get the pass's :class:`~clipcrawl.pipelines.shardloop.ShardWorker` once (a broadcast) and keep
  it in their Python worker process, so stages set themselves up once there (HTTP session, CLIP model), as on a
  Ray actor. Shards are written by the executors, atomically (temp file + rename, ``_stats.json`` last), into
  storage the driver can see: a shared disk or S3. A relative path means the driver's working directory
  (executors run in a work directory of their own). The driver holds the dataset lock for the whole pass.
* **Retries**: a task that dies (its Python worker killed, an executor lost) fails its Spark job; the shard is
  submitted again, up to ``retries`` times (img2dataset's ``max_shard_retry``; Spark's own
  ``spark.task.maxFailures`` retries come first on a cluster), then becomes a
  :class:`~clipcrawl.pipelines.shardloop.ShardFailure` naming the cause (the command exits 1). An exception
  raised by a stage is a bug: it reaches the caller, as on the local engine, and is not retried.
* **Java**: Spark runs on a JVM (Java 17 or later for Spark 4). :func:`check_java` finds it as Spark's
  ``spark-class`` does (``JAVA_HOME/bin/java``, else ``java`` on ``PATH``) when the engine is made, so a
  machine without it gets a ConfigError saying how to install it (exit 2) before anything is written.
* **Python**: a context this engine starts runs its Python workers with this interpreter unless
  ``PYSPARK_PYTHON`` says otherwise; a cluster's executors need clipcrawl importable there (same install).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import logging
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from clipcrawl.schemas.config import ConfigError

log = logging.getLogger("clipcrawl.engine")

JAVA_MIN = 17
_INSTALL_JAVA = ("install a Java 17+ runtime -- e.g. `apt-get install openjdk-17-jre-headless`, `brew install "
                 "openjdk@17` or `conda install -c conda-forge openjdk=17` -- and put its bin/ on PATH or set "
                 "JAVA_HOME to it")


def java_version(java: str) -> int | None:
    """The major version ``java -version`` reports (``"17.0.15"`` -> 17, ``"1.8.0_392"`` -> 8), None if unknown."""
    try:
        r = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', r.stderr + r.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def check_java(what: str = "engine 'spark'") -> str:
    """The ``java`` Spark will launch (``JAVA_HOME/bin/java``, else ``java`` on ``PATH``), or ConfigError saying
    how to get one."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = os.path.join(home, "bin", "java")
        if not (os.path.isfile(java) and os.access(java, os.X_OK)):
            raise ConfigError(f"{what} runs on Spark, which needs Java {JAVA_MIN}+: JAVA_HOME={home} has no "
                              f"bin/java (fix: {_INSTALL_JAVA}, or unset JAVA_HOME if java is on PATH)")
    else:
        found = shutil.which("java")
        if found is None:
            raise ConfigError(f"{what} runs on Spark, which needs Java {JAVA_MIN}+: no `java` on PATH and JAVA_HOME "
                              f"is not set (fix: {_INSTALL_JAVA})")
        java = found
    major = java_version(java)
    if major is None:
        raise ConfigError(f"{what} runs on Spark, which needs Java {JAVA_MIN}+: {java} -version does not run or "
                          f"says no version (fix: {_INSTALL_JAVA})")
    if major < JAVA_MIN:
        raise ConfigError(f"{what} runs on Spark 4, which needs Java {JAVA_MIN}+: {java} is Java {major} "
                          f"(fix: {_INSTALL_JAVA})")
    return java


def _active_context() -> Any:
    from pyspark import SparkContext

    return SparkContext._active_spark_context  # noqa: SLF001 -- the documented way to see a running context


# ------------------------------------------------------------------ executor side
#: the worker of the current pass in this Python worker process: token -> ShardWorker (stages set up once)
_WORKERS: dict[str, Any] = {}


def _close_workers() -> None:
    for w in _WORKERS.values():
        with contextlib.suppress(Exception):  # teardown is best effort: the process is ending or moving on
            w.close()
    _WORKERS.clear()


atexit.register(_close_workers)


def _portable(e: BaseException) -> bytes:
    """The exception itself when it pickles (ConfigError stays a ConfigError on the driver), else its text."""
    try:
        data = pickle.dumps(e)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 -- an exception with unpicklable state: its traceback as text
        return pickle.dumps(RuntimeError("".join(traceback.format_exception(e))))


def _run_partition(bc: Any, token: str, env: dict[str, str], cwd: str, rows: Iterable[tuple[int, Any]]
                   ) -> Iterator[tuple[int, tuple]]:
    """One Spark task: run the pass's worker over its shard(s). Yields ``(index, ("ok", result, host, pid))`` or
    ``(index, ("error", pickled exception))``; a killed process yields nothing (the driver sees the task fail)."""
    from clipcrawl.pipelines.engine import FORWARDED_ENV

    for k in [k for k in os.environ if k.startswith(FORWARDED_ENV) and k not in env]:
        del os.environ[k]  # a reused Python worker: an earlier pass's settings must not stay
    os.environ.update(env)  # failpoints, offline mode: what the driver's process was told
    worker = _WORKERS.get(token)
    if worker is None:
        _close_workers()  # an earlier pass's worker: its stages are not needed any more
        worker = _WORKERS[token] = pickle.loads(bc.value)
    for i, job in rows:
        here = os.getcwd()
        moved = False
        if cwd != here and os.path.isdir(cwd):  # relative paths in the job mean the driver's directory
            os.chdir(cwd)
            moved = True
        try:
            result = worker(job)
        except Exception as e:  # noqa: BLE001 -- handed to the driver, raised there
            yield i, ("error", _portable(e))
            continue
        finally:
            if moved:
                os.chdir(here)
        yield i, ("ok", result, socket.gethostname(), os.getpid())


# ------------------------------------------------------------------ driver side
def _summary(e: BaseException) -> str:
    """One line out of a Spark job failure (a Java stack trace with the Python one inside)."""
    text = str(e)
    for pat in (r"Python worker exited unexpectedly[^.\n]*", r"ExecutorLostFailure[^\n]*", r"\w*Error: [^\n]+",
                r"\w+Exception: [^\n]+"):
        m = re.search(pat, text)
        if m:
            return m.group(0).strip()[:300]
    return " ".join(text.split())[:300] or type(e).__name__


def _loopback_master(master: str) -> bool:
    m = re.match(r"spark://\[?([^\]/:,]+)", master)
    return bool(m) and (m.group(1) in ("localhost", "::1") or m.group(1).startswith("127."))


class SparkEngine:
    """Shards as Spark tasks; see the module doc. ``master``: ``None`` = the running SparkContext, else the one
    ``spark-submit`` configured, else ``local[local_cores]`` (``local[*]`` when None)."""

    name = "spark"

    def __init__(self, master: str | None = None, parallelism: int | None = None, retries: int = 1,
                 local_cores: int | None = None, conf: dict[str, str] | None = None,
                 what: str = "engine 'spark'") -> None:
        try:
            import pyspark  # noqa: F401
        except ImportError:
            raise ConfigError(f"{what} needs pyspark: pip install 'clipcrawl[spark]'") from None
        self.master, self.parallelism, self.retries = master, parallelism, max(0, int(retries))
        self.local_cores, self.conf, self.what = local_cores, dict(conf or {}), what
        self.job_nodes: Counter[str] = Counter()  # "host:pid" of the Python worker -> shards done there
        sc = _active_context()
        if sc is None:
            check_java(what)  # before any write: the JVM starts only when the first shard is due
        elif master and sc.master != master:
            raise ConfigError(f"{what} was given the Spark master {master} but this process already runs a "
                              f"SparkContext on {sc.master} (fix: stop it first, or pass {sc.master} or no master "
                              f"to use it)")

    def counter(self, start: int = 0) -> Callable[[], int]:
        raise ConfigError(f"{self.what}: this command needs ids shared by every worker, which the Spark engine has "
                          f"no place for (fix: --engine local or ray)")

    def _context(self) -> tuple[Any, bool]:
        """The SparkContext to use and whether this engine started it (then it stops it after the pass)."""
        from pyspark import SparkConf, SparkContext

        sc = _active_context()
        if sc is not None:
            return sc, False
        conf = SparkConf().setAppName("clipcrawl")
        if self.master:
            conf.setMaster(self.master)
        elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # else spark-submit's JVM holds --master and the rest
            conf.setMaster(f"local[{self.local_cores or '*'}]")
        conf.set("spark.ui.showConsoleProgress", "false")  # our progress bar is the one on the terminal
        if _loopback_master(conf.get("spark.master", "")) and not conf.contains("spark.driver.host"):
            conf.set("spark.driver.host", "127.0.0.1")  # a cluster on this machine's loopback calls us back there
            conf.set("spark.driver.bindAddress", "127.0.0.1")
        for k, v in self.conf.items():
            conf.set(k, v)
        saved = os.environ.get("PYSPARK_PYTHON")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # read once, when the context starts
        try:
            with warnings.catch_warnings():  # pyspark 4 on pandas 3 warns about its DataFrame API (unused here)
                warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
                sc = SparkContext(conf=conf)
        finally:
            if saved is None:
                os.environ.pop("PYSPARK_PYTHON", None)
        sc.setLogLevel("ERROR")
        log.info("spark: started %s (%d cores)", sc.master, sc.defaultParallelism)
        return sc, True

    def map_ordered(self, worker: Any, jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        from pyspark import cloudpickle

        from clipcrawl.pipelines.engine import FORWARDED_ENV
        from clipcrawl.pipelines.shardloop import ShardFailure

        it = iter(jobs)  # pulled lazily: the driver holds a window of jobs, not the whole input
        first = list(itertools.islice(it, 1))
        if not first:  # nothing to do: no JVM needed
            worker.close()
            return
        sc, owned = self._context()
        token = uuid.uuid4().hex
        group = f"clipcrawl-{token[:12]}"
        n = max(1, self.parallelism or sc.defaultParallelism)
        bc = sc.broadcast(cloudpickle.dumps(worker))  # as Ray ships it: plain pickle refuses closures in a pass
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        task = functools.partial(_run_partition, bc, token, env, os.getcwd())
        name = getattr(getattr(worker, "p", None), "name", "pass")

        def one(i: int, job: Any) -> list:
            sc.setJobGroup(group, f"clipcrawl {name}", interruptOnCancel=True)
            return sc.parallelize([(i, job)], 1).mapPartitions(task).collect()

        pool = ThreadPoolExecutor(n, thread_name_prefix="spark-shard")
        log.info("spark: %s on %s, %d shard(s) at a time", name, sc.master, n)
        try:
            yield from self._ordered(pool, one, itertools.chain(first, it), n, worker, ShardFailure)
        finally:
            with contextlib.suppress(Exception):  # an interrupted pass: its running tasks are cancelled
                sc.cancelJobGroup(group)
            pool.shutdown(wait=True, cancel_futures=True)
            with contextlib.suppress(Exception):
                bc.destroy()
            worker.close()
            if self.job_nodes:
                log.info("spark: shards per Python worker: %s", dict(self.job_nodes))
            if owned:
                sc.stop()

    def _ordered(self, pool: ThreadPoolExecutor, one: Callable[[int, Any], list], source: Iterable[Any], n: int,
                 worker: Any, failure: type) -> Iterator[tuple[Any, Any]]:
        it = iter(source)
        jobs: dict[int, Any] = {}  # pulled and not yet yielded
        flying: dict[Future, int] = {}
        done: dict[int, Any] = {}
        attempts: Counter[int] = Counter()
        window = max(2 * n, 4)
        pulled, nxt, exhausted = 0, 0, False
        retry: list[int] = []
        while True:
            while len(flying) < n:
                if retry:
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
                flying[pool.submit(one, i, jobs[i])] = i
            if not flying:
                break
            ready, _ = wait(list(flying), return_when=FIRST_COMPLETED)
            for f in ready:
                i = flying.pop(f)
                try:
                    rows = f.result()
                except Exception as e:  # noqa: BLE001 -- the Spark job failed: the task's process died
                    attempts[i] += 1
                    why = _summary(e)
                    if "ModuleNotFoundError" in why or "No module named" in why:
                        raise ConfigError(f"{self.what}: the Spark executors cannot import clipcrawl: {why} (fix: "
                                          f"install clipcrawl where the executors run, or point PYSPARK_PYTHON at a "
                                          f"Python that has it)") from None
                    job_name = worker.p.job_name(jobs[i]) if hasattr(worker, "p") else str(jobs[i])
                    log.warning("spark: shard %s failed (attempt %d): %s", job_name, attempts[i], why)
                    if attempts[i] > self.retries:
                        done[i] = failure(job_name, f"spark task failed {attempts[i]} times: {why}")
                    else:
                        retry.append(i)
                    continue
                (_, out), = rows
                if out[0] == "error":
                    raise pickle.loads(out[1])
                _, result, host, pid = out
                self.job_nodes[f"{host}:{pid}"] += 1
                done[i] = result
            while nxt in done:
                yield jobs.pop(nxt), done.pop(nxt)
                nxt += 1
