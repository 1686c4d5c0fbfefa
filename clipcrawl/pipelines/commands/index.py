"""``clipcrawl index DIR``: a faiss kNN index over the image embeddings scoring saved (DIR/index)."""

from __future__ import annotations

import typer

ORDER = 82


def index(
    dataset: str = typer.Argument(..., help="Dataset dir or URL with embeddings/ (score with --save-embeddings)."),
    kind: str = typer.Option("auto", "--kind",
                             help="auto (exact below --exact-max vectors, IVF-PQ above), flat (exact), ivfpq."),
    exact_max: int | None = typer.Option(None, "--exact-max", min=1,
                                         help="Vectors below which auto builds an exact index (default 200000)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild from scratch instead of adding new parts."),
) -> None:
    """Build or extend DIR/index (image.index + metadata/, clip-retrieval's back-end layout)."""
    from clipcrawl.base.progress import log
    from clipcrawl.pipelines.inspect.index import EXACT_MAX, KINDS, IndexUnavailable, build_index

    if kind not in KINDS:
        raise typer.BadParameter(f"use one of {', '.join(KINDS)}", param_hint="--kind")
    from clipcrawl.pipelines.lock import hold_dataset

    try:
        with hold_dataset(dataset):  # it rewrites DIR/index: no score or dedup may change the rows meanwhile
            rep = build_index(dataset, kind=kind, exact_max=exact_max or EXACT_MAX, rebuild=rebuild)
    except IndexUnavailable as e:
        typer.echo(f"clipcrawl index: {e}", err=True)
        raise typer.Exit(2) from None
    log.info("index %s: %s %s, %d vectors (%d added) from %d parts in %.2fs -> %s", rep.action, rep.kind,
             rep.factory, rep.ntotal, rep.added, len(rep.parts), rep.seconds, rep.path)
    typer.echo(f"{rep.action}: {rep.ntotal} vectors ({rep.kind}: {rep.factory}, +{rep.added}) in {rep.path}")


def register(app: typer.Typer) -> None:
    app.command("index")(index)
