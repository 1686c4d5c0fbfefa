"""``clipcrawl export DIR --format mds|litdata|hf|datacomp-uids --out OUT``: a thin wrapper of
:mod:`clipcrawl.pipelines.export` (the kept samples in another loader's format)."""

from __future__ import annotations

import typer

from clipcrawl.pipelines.commands import STORAGE_OPTIONS_HELP, apply_storage_options

ORDER = 72


def export_cmd(
    dataset: str = typer.Argument(..., help="Dataset dir/URL (uses DATASET/shards) or a download output dir."),
    fmt: str = typer.Option(..., "--format", "-f", help="mds (MosaicML streaming), litdata, hf (Hugging Face "
                            "Parquet + card), datacomp-uids (DataComp's sorted uid .npy)."),
    out: str = typer.Option(..., "--out", help="Output folder/URL (datacomp-uids: a .npy path or a folder)."),
    columns: str | None = typer.Option(None, "--columns", help="Comma-separated metadata columns (key and caption "
                                       "always; default: url, sizes, sha256, language, CLIP scores, uid)."),
    push_to_hub: str | None = typer.Option(None, "--push-to-hub", help="hf: upload OUT to this Hub dataset repo."),
    private: bool = typer.Option(False, "--private", help="--push-to-hub: create the repo private."),
    mds_python: str | None = typer.Option(None, "--mds-python", help="mds: a Python (or venv) with "
                                          "mosaicml-streaming, when it is not importable here "
                                          "(default: CLIPCRAWL_MDS_PYTHON)."),
    chunk_mb: int = typer.Option(64, "--chunk-mb", min=1, help="mds/litdata: shard/chunk size in MB (their "
                                 "writers hold one in memory)."),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Export the kept samples (image bytes, caption, metadata) for MosaicML, LitData, Hugging Face or DataComp."""
    from clipcrawl.pipelines.export import export

    apply_storage_options(storage_options, dataset, out)
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    res = export(dataset, fmt, out, cols, push_to_hub=push_to_hub, private=private, mds_python=mds_python,
                 chunk_mb=chunk_mb)
    skipped = f" ({res.skipped_shards} shards already done)" if res.skipped_shards else ""
    typer.echo(f"{res.samples} samples from {res.shards} shards -> {res.out} ({res.format}){skipped}")
    if res.hub_commit:
        typer.echo(f"pushed: {res.hub_commit}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
