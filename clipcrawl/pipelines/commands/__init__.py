"""The CLI commands, one module each (``ORDER`` + ``register(app)``), discovered by :mod:`clipcrawl.cli`."""

from __future__ import annotations

import typer


def wait_for_ctrl_c() -> None:
    """Block until Ctrl-C (a server command serving in the background threads)."""
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def exit_on_failures(failures: list) -> None:
    """Unreadable shards were reported and skipped: say so and exit 1 (the rest of the pass is done)."""
    if failures:
        from clipcrawl.pipelines.shardloop import failure_lines

        for line in failure_lines(failures):
            typer.echo(f"unreadable: {line}", err=True)
        typer.echo(f"clipcrawl: {len(failures)} shard(s) could not be read; the others were processed", err=True)
        raise typer.Exit(1)


ENGINE_HELP = ("local (this machine), ray (a Ray cluster: every shard of the pass runs on its actors) or spark "
               "(every shard a Spark task: the running SparkContext, --spark-master, or local[*]; needs Java 17+).")
SPARK_MASTER_HELP = "Spark master for --engine spark (spark://host:7077, yarn, local[4]...; default local[*])."
RAY_ADDRESS_HELP = ("Ray cluster address (default: RAY_ADDRESS, else a local Ray instance); "
                    "ADDRESS@NODE_IP when this machine's IP as the cluster knows it must be given.")


GPUS_PER_ACTOR_HELP = ("Ray: GPU share per actor of a pass that uses a GPU (e.g. 0.25; default: what its "
                       "stages declare). Only asked for when the cluster has GPUs.")


def make_pass_engine(engine: str, ray_address: str | None, gpus_per_actor: float | None = None,
                     spark_master: str | None = None):
    """The engine a pass command runs on (``--engine``, ``--ray-address ADDRESS[@NODE_IP]``, ``--spark-master``)."""
    from clipcrawl.pipelines.engine import make_engine

    if engine == "spark":
        return make_engine(engine, master=spark_master)
    if engine != "ray":
        return make_engine(engine)
    address, _, node_ip = (ray_address or "").partition("@")
    return make_engine(engine, address=address or None, node_ip=node_ip or None, gpus_per_actor=gpus_per_actor)


STORAGE_OPTIONS_HELP = 'fsspec options as JSON, e.g. \'{"endpoint_url": "http://host:9000"}\'.'


def apply_storage_options(text: str | None, *urls: str | None) -> None:
    """``--storage-options JSON``: the fsspec defaults for the protocols of ``urls`` (exit 2 when not JSON)."""
    if not text:
        return
    import json

    from clipcrawl.base.storage import configure_storage
    from clipcrawl.schemas.config import ConfigError

    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--storage-options: not JSON: {e}") from None
    for url in urls:
        if url:
            configure_storage(url, opts)
