"""``clipcrawl verify DIR [--json]``: check every invariant of a dataset or a folder of shards.

Exit 0 when clean, 1 with the findings (each names its file), 2 when DIR is not a dataset.
"""

from __future__ import annotations

import json

import typer

from clipcrawl.pipelines.commands import STORAGE_OPTIONS_HELP, apply_storage_options

ORDER = 85


def verify_cmd(
    dataset: str = typer.Argument(..., help="Dataset dir/URL (shards/, samples/, manifest.json) or a folder of "
                                            "NNNNN shards (clipcrawl download / img2dataset output)."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    workers: int = typer.Option(8, "--workers", min=1, help="Shards checked in parallel."),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Prove a dataset is consistent: tars vs Parquet, statuses, stats, samples/, manifest, sizes, embeddings."""
    from clipcrawl.pipelines.lock import hold_dataset
    from clipcrawl.pipelines.verify import verify

    apply_storage_options(storage_options, dataset)
    with hold_dataset(dataset, shared=True):  # a pass rewriting it now would look like damage: exit 3
        rep = verify(dataset, workers=workers)
    if as_json:
        typer.echo(json.dumps(rep.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print(rep)
    if not rep.clean:
        raise typer.Exit(1)


def _print(rep) -> None:  # noqa: ANN001 - VerifyReport, imported lazily
    """One line per finding (``error  code  file: message``), then the summary line."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=False, soft_wrap=True, highlight=False)
    style = {"error": "bold red", "note": "yellow"}
    for f in rep.findings:
        console.print(f"[{style.get(f.severity, '')}]{f.severity:5}[/] {f.code}  {escape(f.path)}: {escape(f.message)}")
    console.print(("[green]" if rep.clean else "[bold red]") + escape(rep.summary()) + "[/]")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)
