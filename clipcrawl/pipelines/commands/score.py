"""``clipcrawl score DIR``: CLIP-score the shards of a dataset or of img2dataset output, in place.

Each shard's images are read from ``NNNNN.tar``; ``NNNNN.parquet`` is rewritten atomically with
``clip_similarity``, ``clip_model``, ``punsafe``, ``pwatermark`` (rows whose image is not in the tar
keep null scores) and, with ``--threshold``, rows below it become ``filtered_clip``; the shard's
``_stats.json`` is rewritten with the new counts. Rows an earlier ``--threshold`` filtered are
decided again. Shards already scored by the same model are not re-embedded (only re-thresholded)
unless ``--rescore`` or ``--save-embeddings`` asks for embeddings.
"""

from __future__ import annotations

import typer

from clipcrawl.pipelines.commands import ENGINE_HELP, RAY_ADDRESS_HELP, make_pass_engine

ORDER = 40


def score(
    dir: str = typer.Argument(..., help="Dataset dir (uses DIR/shards) or a folder of NNNNN.tar + NNNNN.parquet."),
    model: str = typer.Option("ViT-B-32", "--model", help="open_clip name, hf-hub:org/repo, or tiny (shipped)."),
    pretrained: str | None = typer.Option("openai", "--pretrained",
                                          help="Pretrained tag or a local checkpoint file/folder."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (fast on CPU, fp16 on GPU), fast, fp32 (exact), fp16, bf16."),
    device: str = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per model batch."),
    threshold: float | None = typer.Option(
        None, "--threshold",
        help="Mark rows with clip_similarity below this as filtered_clip (0.28 is LAION's for ViT-B-32); "
             "default: score only."),
    save_embeddings: bool = typer.Option(False, "--save-embeddings",
                                         help="Also write clip-retrieval's img_emb/ text_emb/ metadata/ folders."),
    embeddings_dir: str | None = typer.Option(None, "--embeddings-dir",
                                              help="Where to write them (default: DIR/embeddings)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Decode threads (default: CPU count, max 8)."),
    rescore: bool = typer.Option(False, "--rescore", help="Re-embed shards already scored by this model."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Score image-caption similarity with CLIP and store it (and zero-shot tags) in each shard's Parquet."""
    from clipcrawl.pipelines.passes.score import print_summary, score_shards
    from clipcrawl.schemas.config import ClipConfig, parse_config

    cfg = parse_config(
        {"model": model, "pretrained": pretrained, "precision": precision, "device": device,
         "batch_size": batch_size, "save_embeddings": save_embeddings, "workers": workers,
         **({"threshold": threshold} if threshold is not None else {})},
        ClipConfig, "clipcrawl score",
    )
    summary = score_shards(dir, cfg, apply_threshold=threshold is not None, embeddings_dir=embeddings_dir,
                           rescore=rescore, engine=make_pass_engine(engine, ray_address))
    print_summary(summary)
    from clipcrawl.pipelines.commands import exit_on_failures

    exit_on_failures(summary.failures)
    if summary.shards == 0:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("score")(score)
