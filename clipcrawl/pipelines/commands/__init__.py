"""The CLI commands, one module each (``ORDER`` + ``register(app)``), discovered by :mod:`clipcrawl.cli`."""

from __future__ import annotations

import typer


def exit_on_failures(failures: list) -> None:
    """Unreadable shards were reported and skipped: say so and exit 1 (the rest of the pass is done)."""
    if failures:
        from clipcrawl.pipelines.shardloop import failure_lines

        for line in failure_lines(failures):
            typer.echo(f"unreadable: {line}", err=True)
        typer.echo(f"clipcrawl: {len(failures)} shard(s) could not be read; the others were processed", err=True)
        raise typer.Exit(1)
