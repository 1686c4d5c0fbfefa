"""``clipcrawl dedup DIR``: a thin wrapper of :mod:`clipcrawl.pipelines.passes.dedup` (exact, perceptual
and semantic dedup over existing shards, against the dataset's index and eval sets)."""

from __future__ import annotations

from typing import Any

import typer

from clipcrawl.pipelines.commands import ENGINE_HELP, RAY_ADDRESS_HELP, SPARK_MASTER_HELP, make_pass_engine

ORDER = 50


def dedup_cmd(
    path: str = typer.Argument(..., help="Dataset dir (uses DATASET/shards) or a folder of shards."),
    phash_distance: int | None = typer.Option(None, "--phash-distance", min=0, max=32,
                                              help="pHash Hamming distance k (default: DedupConfig's)."),
    semantic_threshold: float | None = typer.Option(None, "--semantic-threshold", min=0.0, max=1.0,
                                                    help="CLIP cosine tau (default: DedupConfig's)."),
    no_semantic: bool = typer.Option(False, "--no-semantic", help="Skip embedding-based dedup."),
    no_phash: bool = typer.Option(False, "--no-phash", help="Skip perceptual-hash dedup."),
    exclude_near: list[str] = typer.Option([], "--exclude-near", help="Evaluation image folder or .tar shards "
                                           "(repeatable); near-duplicates of them are dropped."),
    model: str | None = typer.Option(None, "--model", help="CLIP model to embed images without stored "
                                     "embeddings (e.g. tiny, ViT-B-32)."),
    pretrained: str | None = typer.Option(None, "--pretrained", help="open_clip pretrained tag or checkpoint."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
    keep_tars: bool = typer.Option(False, "--keep-tars", help="Only rewrite Parquet; leave tars as they are."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be marked; write nothing."),
    allow_tiny: bool = typer.Option(False, "--allow-tiny", help="Allow semantic dedup with the shipped tiny test "
                                    "model (it marks distinct images as duplicates: for tests only)."),
    dedup_partitions: int | None = typer.Option(None, "--dedup-partitions", min=1, max=64,
                                                help="Partitions of the rebuilt DATASET/dedup index (default: "
                                                "DedupConfig's, 1 = one index)."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    spark_master: str | None = typer.Option(None, "--spark-master", help=SPARK_MASTER_HELP),
) -> None:
    """Mark duplicates across all shards of DIR (exact, pHash, semantic, eval sets)."""
    from clipcrawl.pipelines.commands import exit_on_failures
    from clipcrawl.pipelines.passes.dedup import dedup_dataset
    from clipcrawl.schemas.config import DedupConfig, parse_config

    update: dict[str, Any] = {"exclude_near": list(exclude_near)}
    if phash_distance is not None:
        update["phash_max_distance"] = phash_distance
    if semantic_threshold is not None:
        update["semantic_threshold"] = semantic_threshold
    if no_semantic:
        update["semantic"] = False
    if no_phash:
        update["phash"] = False
    if dedup_partitions is not None:
        update["partitions"] = dedup_partitions
    config = parse_config({**DedupConfig().model_dump(), **update}, DedupConfig, "clipcrawl dedup options")
    if model and pretrained is None and model not in ("tiny", "clipcrawl-tiny"):
        pretrained = "openai"
    r = dedup_dataset(path, config, model=model, pretrained=pretrained, device=device, keep_tars=keep_tars,
                      dry_run=dry_run, allow_tiny=allow_tiny, engine=make_pass_engine(engine, ray_address, spark_master=spark_master))
    by = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())) or "none"
    typer.echo(f"{r.rows} rows in {r.shards} shards, {r.considered} success before the pass")
    typer.echo(f"duplicates marked: {r.marked} ({by}); semantic: {r.semantic}")
    if not dry_run:
        typer.echo(f"shards rewritten: {r.rewritten}")
    exit_on_failures(r.failures)


def register(app: typer.Typer) -> None:
    app.command("dedup")(dedup_cmd)
