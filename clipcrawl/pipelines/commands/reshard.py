"""``clipcrawl reshard DIR [--out OUT] --samples-per-shard N [--shuffle --seed S]``: a thin wrapper of
:mod:`clipcrawl.pipelines.passes.reshard` (the kept samples rewritten as full shards of N)."""

from __future__ import annotations

import typer

from clipcrawl.pipelines.commands import (
    ENGINE_HELP,
    RAY_ADDRESS_HELP,
    SPARK_MASTER_HELP,
    STORAGE_OPTIONS_HELP,
    apply_storage_options,
    make_pass_engine,
)

ORDER = 70


def reshard_cmd(
    dataset: str = typer.Argument(..., help="Dataset dir/URL (uses DATASET/shards) or a download output dir."),
    out: str | None = typer.Option(None, "--out", help="New dataset dir/URL; default DATASET/resharded."),
    samples_per_shard: int = typer.Option(10_000, "--samples-per-shard", "-n", min=1, help="Samples per shard."),
    shuffle: bool = typer.Option(False, "--shuffle", help="Shuffle samples across all shards."),
    seed: int = typer.Option(0, "--seed", help="Seed of --shuffle (same seed, same shards)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier reshard in --out."),
    workers: int = typer.Option(2, "--workers", min=1, help="Output shards written in parallel."),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    spark_master: str | None = typer.Option(None, "--spark-master", help=SPARK_MASTER_HELP),
) -> None:
    """Rewrite the kept samples of a dataset as new shards of N samples (after filtering/dedup)."""
    from clipcrawl.pipelines.commands import exit_on_failures
    from clipcrawl.pipelines.passes.reshard import reshard

    apply_storage_options(storage_options, dataset, out)
    res = reshard(dataset, out, samples_per_shard, shuffle=shuffle, seed=seed, overwrite=overwrite, workers=workers,
                  engine=make_pass_engine(engine, ray_address, spark_master=spark_master))
    typer.echo(f"{res.samples} samples in {len(res.shards)} shards -> {res.out}/shards")
    exit_on_failures(res.failures)


def register(app: typer.Typer) -> None:
    app.command("reshard")(reshard_cmd)
