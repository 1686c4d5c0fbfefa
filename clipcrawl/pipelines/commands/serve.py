"""``clipcrawl serve DIR...``: clip-retrieval back's HTTP API over one or more datasets (127.0.0.1 by default)."""

from __future__ import annotations

import typer

ORDER = 84.5


def serve(
    datasets: list[str] = typer.Argument(..., help="Dataset dirs (each served as an index named after its folder)."),
    port: int = typer.Option(1234, "--port", min=0, max=65535, help="Port (0: any free one; clip-retrieval's is 1234)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep the loopback default "
                                                         "unless you mean to share the datasets)."),
    cors: list[str] = typer.Option([], "--cors", help="Allow this browser origin (e.g. the front end's "
                                                      "http://localhost:8000, or '*'); repeatable. Default: none."),
    allow_image_url: bool = typer.Option(False, "--allow-image-url",
                                         help="Let clients send image_url (the server then fetches that URL)."),
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="IVF cells to visit (default: the index's)."),
    model: str | None = typer.Option(None, "--model", help="CLIP model (default: the one that scored each dataset)."),
    pretrained: str | None = typer.Option(None, "--pretrained", help="Its weights (tag or file), with --model."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
) -> None:
    """Serve GET /indices-list, POST /knn-service and POST /metadata as clip-retrieval back does, so
    clip_retrieval's ClipClient and web front end can query the datasets."""
    from clipcrawl.base.progress import log
    from clipcrawl.pipelines.commands import wait_for_ctrl_c
    from clipcrawl.pipelines.inspect.index import IndexUnavailable
    from clipcrawl.pipelines.inspect.serve import ServeServer

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serve: listening on %s: anyone who can reach it can query the datasets", host)
    try:
        srv = ServeServer(datasets, host=host, port=port, cors=cors, allow_image_url=allow_image_url,
                          nprobe=nprobe, model=model, pretrained=pretrained, device=device, warm=True)
        srv.__enter__()
    except (IndexUnavailable, FileNotFoundError) as e:
        typer.echo(f"clipcrawl serve: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        names = ", ".join(srv.indices.names)
        typer.echo(f"serving {names} at {srv.url} (clip-retrieval back's API; Ctrl-C stops)")
        wait_for_ctrl_c()
    finally:
        srv.__exit__(None, None, None)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
