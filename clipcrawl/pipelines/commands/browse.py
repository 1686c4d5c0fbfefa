"""``clipcrawl browse DIR``: a local web page to search and filter a dataset (127.0.0.1 by default)."""

from __future__ import annotations

import typer

ORDER = 84


def browse(
    dataset: str = typer.Argument(..., help="Dataset dir or URL."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep the loopback default "
                                                         "unless you mean to share the page)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
) -> None:
    """Serve a search box, a thumbnail grid with captions and scores, filters and per-sample metadata."""
    from clipcrawl.base.progress import log
    from clipcrawl.pipelines.commands import wait_for_ctrl_c
    from clipcrawl.pipelines.inspect.browse import BrowseServer

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("browse: listening on %s: anyone who can reach it can read the dataset", host)
    with BrowseServer(dataset, host=host, port=port) as srv:
        typer.echo(f"browse {dataset} at {srv.url} (Ctrl-C stops)")
        if open_browser:
            import webbrowser

            webbrowser.open(srv.url)
        wait_for_ctrl_c()


def register(app: typer.Typer) -> None:
    app.command("browse")(browse)
