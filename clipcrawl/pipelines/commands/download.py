"""``clipcrawl download INPUT --out DIR``: img2dataset-compatible image download (async, resumable)."""

from __future__ import annotations

import typer

from clipcrawl.pipelines.commands import ENGINE_HELP, RAY_ADDRESS_HELP, SPARK_MASTER_HELP, make_pass_engine
from clipcrawl.schemas.components import DEFAULT_JPEG_DRAFT_GAP

ORDER = 20


def download(
    input: str = typer.Argument(..., help="URL list (parquet/csv/tsv/json/jsonl/txt, optionally .gz), a folder of "
                                          "them, or crawl/Common Crawl output (DIR with pairs/)."),
    out: str = typer.Option(..., "--out", "-o", help="Output folder (or fsspec URL) for NNNNN.tar/.parquet/_stats.json."),
    input_format: str = typer.Option("auto", "--input-format", "--input_format",
                                     help="auto (from the extension), parquet, csv, tsv, json, jsonl or txt "
                                          "(img2dataset's txt.gz, csv.gz... also: gzip is detected)."),
    url_col: str = typer.Option("url", "--url-col", help="Column holding the image URLs."),
    caption_col: str | None = typer.Option(None, "--caption-col", help="Column holding the captions "
                                                                         "(default: 'caption' when present)."),
    save_additional_columns: str | None = typer.Option(
        None, "--save-additional-columns", help="Comma-separated input columns to keep in the output metadata."),
    output_format: str = typer.Option("webdataset", "--output-format", help="webdataset, parquet or files."),
    image_size: int = typer.Option(256, "--image-size", help="Target size in pixels."),
    resize_mode: str = typer.Option("border", "--resize-mode",
                                    help="no, border, keep_ratio, keep_ratio_largest or center_crop."),
    resize_only_if_bigger: bool = typer.Option(False, "--resize-only-if-bigger", help="Never upscale."),
    min_image_size: int = typer.Option(0, "--min-image-size", help="Smaller side below this -> failed_to_resize."),
    max_image_area: float = typer.Option(float("inf"), "--max-image-area", help="Pixels above this -> failed_to_resize."),
    max_aspect_ratio: float = typer.Option(float("inf"), "--max-aspect-ratio",
                                           help="Larger/smaller side above this -> failed_to_resize."),
    encode_format: str = typer.Option("jpg", "--encode-format", help="jpg, png or webp."),
    encode_quality: int | None = typer.Option(None, "--encode-quality",
                                              help="jpg/webp quality (95); png: zlib level 0-9 (9)."),
    max_decode_pixels: int = typer.Option(100_000_000, "--max-decode-pixels",
                                          help="Header size above this many pixels -> failed_to_resize, never decoded."),
    jpeg_draft_gap: float = typer.Option(DEFAULT_JPEG_DRAFT_GAP, "--jpeg-draft-gap",
                                         help="Decode JPEGs DCT-scaled to >= this x the output size (0: full decode)."),
    samples_per_shard: int = typer.Option(10_000, "--samples-per-shard", "--number-sample-per-shard",
                                          help="Input rows per shard."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds per request."),
    retries: int = typer.Option(0, "--retries", help="Retries on timeouts, resets, 429 and 5xx."),
    concurrency: int = typer.Option(64, "--concurrency", help="Requests in flight in total."),
    per_host_concurrency: int = typer.Option(16, "--per-host-concurrency", help="Requests in flight per host."),
    workers: int | None = typer.Option(None, "--workers", help="Decode/resize threads or processes (default: CPU "
                                                                 "count)."),
    decoder: str = typer.Option("threads", "--decoder", help="threads (less CPU and memory) or processes (a decoder "
                                                            "crash fails one image, not the run)."),
    user_agent: str | None = typer.Option(None, "--user-agent", help="User-Agent header (its first token is matched "
                                                                     "by robots.txt and X-Robots-Tag)."),
    disallowed_header_directives: str | None = typer.Option(
        None, "--disallowed-header-directives",
        help="Comma-separated X-Robots-Tag directives that refuse an image (default noai,noimageai,noml,noindex,"
             "noimageindex; '' or [] turns the check off)."),
    no_robots: bool = typer.Option(False, "--ignore-robots", help="Do not fetch or obey robots.txt (your own sites "
                                                                  "only)."),
    no_robots_alias: bool = typer.Option(False, "--no-robots", hidden=True, help="Old name of --ignore-robots."),
    allow_private_networks: bool = typer.Option(False, "--allow-private-networks",
                                                help="Allow private/loopback addresses (intranets, tests); refused "
                                                     "by default here (`clipcrawl img2dataset` allows them, as "
                                                     "img2dataset does)."),
    dns_server: list[str] | None = typer.Option(
        None, "--dns-server", help="DNS server for the image hosts, ip or ip:port (repeat; default: "
                                   "/etc/resolv.conf's). Answers are cached (TTL, negative answers)."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Refetch failed_to_download rows of finished shards and rewrite them."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    spark_master: str | None = typer.Option(None, "--spark-master", help=SPARK_MASTER_HELP),
    blocklist: list[str] | None = typer.Option(
        None, "--blocklist", help="Blocklist file (repeat): URL, domain:example.com, sha256:<hex>, md5:<hex> lines "
                                  "-> status blocked (URL/domain before any request, hashes on the bytes)."),
    blur_faces: bool = typer.Option(False, "--blur-faces", help="Detect faces and blur them before encoding "
                                                                "(needs the faces extra: opencv-python-headless)."),
    bbox_col: str | None = typer.Option(None, "--bbox-col", help="Input column of [x0,y0,x1,y1] boxes (0-1) to blur "
                                                                  "(img2dataset's bbox_col)."),
    max_retry_after: float = typer.Option(120.0, "--max-retry-after",
                                          help="Cap in seconds on a host pause after 429/503."),
    no_tdmrep: bool = typer.Option(False, "--ignore-tdmrep", help="Do not honour TDMRep (your own sites only)."),
    no_image_metadata: bool = typer.Option(
        False, "--ignore-image-metadata", help="Do not honour the opt-outs in the images' own IPTC/C2PA metadata "
                                               "(your own images only; the provenance columns are still recorded)."),
    no_ai_txt: bool = typer.Option(False, "--ignore-ai-txt", help="Do not fetch or honour the origins' ai.txt "
                                                                  "(your own sites only)."),
    exclude_ai_generated: bool = typer.Option(
        False, "--exclude-ai-generated", help="After the download, drop images whose IPTC/C2PA metadata says a "
                                              "generative model made them (status filtered_image)."),
    licenses: str | None = typer.Option(
        None, "--licenses", help="After the download, keep only images under these licences (image metadata, else "
                                 "the page): comma-separated cc0, pdm, cc-by, cc-by-sa, cc-by-nd, cc-by-nc, cc-by-nc-sa, "
                                 "cc-by-nc-nd (status filtered_image)."),
    preset: str | None = typer.Option(
        None, "--preset", help="Curation recipe (laion400m, laion2b-en, datacomp-basic, datacomp-clip-top30, "
        "metaclip): its caption, language and image rules are applied to the shards after the download "
        "(CLIP rules need `clipcrawl score`)."),
) -> None:
    """Download and resize the images of a URL list into img2dataset-compatible shards.

    Finished shards are skipped, so rerunning the same command resumes an interrupted download.
    Shards hold --samples-per-shard input rows however the input is split into files.

    Private and loopback addresses (127.0.0.1, 10.x, 192.168.x, ...) are refused unless --allow-private-networks (`clipcrawl img2dataset` allows them by default, as img2dataset does).
    """
    from clipcrawl.pipelines.passes.download import download as run_download
    from clipcrawl.schemas.config import DownloadConfig, OutputConfig, UrlListConfig, parse_config

    src = "clipcrawl download"
    input_format = input_format.removesuffix(".gz")  # img2dataset's names; compressed files are detected
    urls = parse_config({"path": input, "input_format": input_format, "url_col": url_col,
                         "caption_col": caption_col or "caption",
                         "save_additional_columns": list(dict.fromkeys(
                             [*(_split(save_additional_columns) or []), *([bbox_col] if bbox_col else [])]))},
                        UrlListConfig, src)
    dl = {"image_size": image_size, "resize_mode": resize_mode, "resize_only_if_bigger": resize_only_if_bigger,
          "min_image_size": min_image_size, "max_image_area": max_image_area, "max_aspect_ratio": max_aspect_ratio,
          "encode_format": encode_format, "encode_quality": encode_quality, "max_decode_pixels": max_decode_pixels,
          "jpeg_draft_gap": jpeg_draft_gap, "timeout": timeout, "retries": retries,
          "concurrency": concurrency, "per_host_concurrency": per_host_concurrency, "workers": workers,
          "decoder": decoder, "respect_robots": not (no_robots or no_robots_alias),
          "allow_private_networks": allow_private_networks,
          "blocklists": list(blocklist or []), "blur_faces": blur_faces, "bbox_col": bbox_col,
          "max_retry_after": max_retry_after, "respect_tdmrep": not no_tdmrep, "dns_servers": list(dns_server or []),
          "respect_image_metadata": not no_image_metadata, "respect_ai_txt": not no_ai_txt}
    if user_agent:
        dl["user_agent"] = user_agent
    directives = _split(disallowed_header_directives)
    if directives is not None:
        dl["disallowed_header_directives"] = directives
    config = parse_config(dl, DownloadConfig, src)
    provenance = {"exclude_ai_generated": exclude_ai_generated, "licenses": _split(licenses) or []}
    from clipcrawl.filters.provenance import check_licenses

    check_licenses(provenance["licenses"], src)  # an unknown licence name -> exit 2, before any download
    output = parse_config({"output_format": output_format, "samples_per_shard": samples_per_shard}, OutputConfig, src)
    from clipcrawl.pipelines.preflight import check_output

    check_output(out, "output")  # --out is a file / not writable -> exit 2, before any download
    summary = run_download(urls, out, config, output, retry_failed=retry_failed,
                           engine=make_pass_engine(engine, ray_address, spark_master=spark_master))
    _print_summary(summary)
    if preset or exclude_ai_generated or provenance["licenses"]:
        from clipcrawl.filters.presets import apply_preset, preset_overrides
        from clipcrawl.pipelines.passes.curate import curate_shards, print_curation
        from clipcrawl.schemas.config import FiltersConfig, ImageFilterConfig, TextFilterConfig

        text = TextFilterConfig(enabled=bool(preset) and "text" in preset_overrides(preset))  # the recipe's only
        filters = FiltersConfig(text=text, image=ImageFilterConfig(**provenance))
        if preset:
            filters = apply_preset(filters, preset)  # no scores yet: the CLIP cut finds no candidates
        print_curation(curate_shards(out, filters, preset))

    from clipcrawl.pipelines.commands import exit_on_failures

    exit_on_failures(summary.failures)


def _split(value: str | None) -> list[str] | None:
    """``"a,b"`` -> ["a", "b"]; also accepts img2dataset's ``'["a","b"]'`` and ``[]``."""
    if value is None:
        return None
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    return [p.strip().strip("'\"") for p in v.split(",") if p.strip().strip("'\"")]


def _print_summary(s) -> None:  # noqa: ANN001 - DownloadSummary, imported lazily
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"download -> {s.out}", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("count", justify="right")
    total = sum(s.status_counts.values())
    t.add_row("shards written / retried / already done",
              f"{s.shards_written} / {s.shards_retried} / {s.shards_skipped}")
    t.add_row("samples (all shards)", f"{total:,}")
    for status, n in sorted(s.status_counts.items(), key=lambda kv: -kv[1]):
        t.add_row(f"  {status}", f"{n:,} ({n / total:.1%})" if total else "0")
    t.add_row("fetched this run", f"{s.fetched:,} in {s.duration:.1f}s ({s.rate:,.1f} images/s)")
    t.add_row("downloaded", f"{s.bytes_downloaded / 1e6:,.1f} MB")
    console = Console(stderr=False)
    console.print(t)
    note = private_note(s)
    if note:
        console.print(note, markup=False, highlight=False, soft_wrap=True)


def private_note(s) -> str | None:  # noqa: ANN001 - DownloadSummary
    """What to do when the run refused URLs as private/loopback addresses (None when it refused none)."""
    if not s.blocked_private:
        return None
    who = "every URL" if s.blocked_private >= s.fetched else f"{s.blocked_private:,} of {s.fetched:,} URLs"
    return (f"{who} refused as a private/loopback address: `download` refuses them by default (fix: add "
            f"--allow-private-networks if those hosts are yours; `clipcrawl img2dataset` allows them by default, "
            f"as img2dataset does)")


def register(app: typer.Typer) -> None:
    app.command("download")(download)

