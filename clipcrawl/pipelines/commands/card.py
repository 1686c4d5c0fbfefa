"""``clipcrawl card DIR``: write a Hugging Face dataset card (DIR/README.md) from the dataset itself."""

from __future__ import annotations

import typer

ORDER = 85


def card(
    dataset: str = typer.Argument(..., help="Dataset dir or URL (with manifest.json and samples/)."),
    license_id: str = typer.Option("unknown", "--license",
                                   help="License id for the card and metadata (Hub id, e.g. cc-by-4.0; "
                                        "the images keep their owners' rights)."),
    pretty_name: str | None = typer.Option(None, "--name", help="pretty_name (default: from the folder name)."),
    out: str | None = typer.Option(None, "--out", help="Write here instead of DIR/README.md."),
) -> None:
    """Sources, dates, rules and thresholds, models, funnel, opt-outs and limitations, with the Hub's YAML header."""
    from clipcrawl.pipelines.inspect.card import write_card
    from clipcrawl.pipelines.lock import check_manifest, hold_dataset

    try:  # it reads one consistent state (no pass rewriting it meanwhile); writing DIR/README.md is a write
        with hold_dataset(dataset, shared=out is not None):
            check_manifest(dataset)
            path = write_card(dataset, pretty_name=pretty_name, license_id=license_id, out=out)
    except ValueError as e:
        typer.echo(f"clipcrawl card: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("card")(card)
