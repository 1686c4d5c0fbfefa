"""``clipcrawl search DIR "prompt"``: the samples nearest to a text prompt or an image."""

from __future__ import annotations

import typer

ORDER = 83


def search(
    dataset: str = typer.Argument(..., help="Dataset dir or URL (with embeddings/, ideally index/)."),
    prompt: str | None = typer.Argument(None, help="Text to search for."),
    image: str | None = typer.Option(None, "--image", help="Search by this image instead (a path or URL)."),
    k: int = typer.Option(20, "-k", "--k", min=1, help="Number of results."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    model: str | None = typer.Option(None, "--model", help="CLIP model (default: the one that scored the dataset)."),
    pretrained: str | None = typer.Option(None, "--pretrained", help="Its weights (tag or file), with --model."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="IVF cells to visit (default: the index's)."),
) -> None:
    """Embed a prompt (or an image) with the dataset's CLIP model; print the top-k by cosine similarity."""
    import json

    from clipcrawl.pipelines.inspect.index import IndexUnavailable
    from clipcrawl.pipelines.inspect.search import Searcher

    if (prompt is None) == (image is None):
        raise typer.BadParameter("give a prompt or --image (one of them)", param_hint="PROMPT")
    from clipcrawl.pipelines.lock import hold_dataset

    with hold_dataset(dataset, shared=True):  # a reader: never next to a pass rewriting the rows or the index
        try:
            s = Searcher(dataset, model=model, pretrained=pretrained, device=device, nprobe=nprobe)
            vec = s.embed_image(image) if image is not None else s.embed_text(prompt or "")
        except (IndexUnavailable, FileNotFoundError) as e:
            typer.echo(f"clipcrawl search: {e}", err=True)
            raise typer.Exit(2) from None
        hits = s.search(vec, k)
    if as_json:
        typer.echo(json.dumps(hits, indent=2, ensure_ascii=False, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(hits)} of {len(s)} indexed ({s.kind})", title_justify="left")
    for col in ("#", "similarity", "key", "caption", "url"):
        t.add_column(col, overflow="fold")
    for h in hits:
        t.add_row(str(h["rank"]), f"{h['similarity']:.3f}", h.get("key") or "", h.get("caption") or "",
                  h.get("url") or "")
    Console().print(t)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
