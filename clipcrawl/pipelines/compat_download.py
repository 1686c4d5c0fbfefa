"""img2dataset 1.47's ``download(...)`` on clipcrawl; public as ``clipcrawl.img2dataset.download``.

Same signature and defaults as img2dataset 1.47's ``download`` (every keyword), same output: sequential
keys, img2dataset's Parquet columns, ``_stats.json`` and files (see :mod:`clipcrawl.pipelines.compat`).
Differences on purpose (README, "Switching from img2dataset"): robots.txt is obeyed unless
``respect_robots=False``; requests are limited per host (``per_host_concurrency``); bodies above
``max_bytes`` fail; ``distributor="pyspark"`` runs on our Spark engine (the running SparkContext, else
``spark_master`` or ``local[processes_count]``); wandb is not driven; the progress lines go to stderr and only
to a terminal unless ``progress=True``.
The keyword-only arguments after ``disallowed_header_directives`` are clipcrawl's own.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["download"]

log = logging.getLogger("clipcrawl.img2dataset")
#: the User-Agent with user_agent_token: the token leads, so robots rules and X-Robots-Tag match it
_UA_TEMPLATE = "{token} (compatible; clipcrawl/0.1; +https://github.com/clipcrawl/clipcrawl)"


def download(
    url_list: str,
    image_size: int = 256,
    output_folder: str = "images",
    processes_count: int = 1,
    resize_mode: str = "border",
    resize_only_if_bigger: bool = False,
    upscale_interpolation: str = "lanczos",
    downscale_interpolation: str = "area",
    encode_quality: int = 95,
    encode_format: str = "jpg",
    skip_reencode: bool = False,
    output_format: str = "files",
    input_format: str = "txt",
    url_col: str = "url",
    caption_col: str | None = None,
    bbox_col: str | None = None,
    thread_count: int = 256,
    number_sample_per_shard: int = 10000,
    extract_exif: bool = True,
    save_additional_columns: list[str] | None = None,
    timeout: int = 10,
    enable_wandb: bool = False,
    wandb_project: str = "img2dataset",
    oom_shard_count: int = 5,
    compute_hash: str | None = "sha256",
    verify_hash: list[str] | None = None,
    distributor: str = "multiprocessing",
    subjob_size: int = 1000,
    retries: int = 0,
    disable_all_reencoding: bool = False,
    min_image_size: int = 0,
    max_image_area: float = float("inf"),
    max_aspect_ratio: float = float("inf"),
    incremental_mode: str = "incremental",
    max_shard_retry: int = 1,
    user_agent_token: str | None = None,
    disallowed_header_directives: list[str] | None = None,
    *,
    respect_robots: bool = True,
    allow_private_networks: bool = True,
    ignore_ssl_certificate: bool = False,
    per_host_concurrency: int = 16,
    max_bytes: int = 30_000_000,
    ray_address: str | None = None,
    spark_master: str | None = None,
    decoder: str = "threads",
    dns_servers: list[str] | None = None,
    progress: bool | None = None,
) -> Any:
    """Download the images of ``url_list`` into ``output_folder`` as img2dataset 1.47 does.

    ``progress``: img2dataset's terminal output (a line per input file, its ``worker``/``total`` lines per
    finished shard, a bar over the rows, the final per-status counts, reasons and speed) on stderr;
    None (default): only when stderr is a terminal; False: nothing (errors still reach logging); True:
    the lines even when stderr is a file or pipe.

    Returns the run's :class:`~clipcrawl.pipelines.passes.download.DownloadSummary` (img2dataset returns
    None). Raises :class:`~clipcrawl.schemas.config.ConfigError` (a ValueError) for unusable arguments.
    """
    from clipcrawl.pipelines.compat import CompatOptions, run_compat
    from clipcrawl.schemas.config import NOAI_DIRECTIVES, ConfigError, DownloadConfig, parse_config

    if disallowed_header_directives is None:
        disallowed_header_directives = list(NOAI_DIRECTIVES)
    if verify_hash is not None:
        if isinstance(verify_hash, str) or len(verify_hash) != 2:
            raise ConfigError(f"verify_hash must be [column, hash type], got {verify_hash!r}")
        verify_hash = (str(verify_hash[0]), str(verify_hash[1]))
    if enable_wandb:
        log.warning("enable_wandb: clipcrawl does not log to wandb (wandb_project=%s ignored); "
                    "see `clipcrawl stats` for the run's report", wandb_project)
    del subjob_size  # img2dataset's batch of shards: our engines keep a window of shards in flight instead
    options = CompatOptions(
        input_format=input_format, url_col=url_col, caption_col=caption_col,
        save_additional_columns=tuple(save_additional_columns or ()),
        verify_hash=verify_hash, compute_hash=compute_hash, bbox_col=bbox_col, output_format=output_format,
        encode_format=encode_format, number_sample_per_shard=number_sample_per_shard,
        oom_shard_count=oom_shard_count, extract_exif=extract_exif, incremental_mode=incremental_mode,
    )
    dl: dict[str, Any] = {
        "image_size": image_size, "resize_mode": resize_mode, "resize_only_if_bigger": resize_only_if_bigger,
        "upscale_interpolation": str(upscale_interpolation).lower(),
        "downscale_interpolation": str(downscale_interpolation).lower(),
        "encode_quality": encode_quality, "encode_format": encode_format, "skip_reencode": skip_reencode,
        "disable_all_reencoding": disable_all_reencoding, "min_image_size": min_image_size,
        "max_image_area": max_image_area, "max_aspect_ratio": max_aspect_ratio, "timeout": timeout,
        "retries": retries, "concurrency": thread_count, "per_host_concurrency": per_host_concurrency,
        "workers": processes_count, "decoder": decoder, "respect_robots": respect_robots,
        "allow_private_networks": allow_private_networks, "ignore_ssl_certificate": ignore_ssl_certificate,
        "disallowed_header_directives": [str(d) for d in disallowed_header_directives], "max_bytes": max_bytes,
        "dns_servers": [str(d) for d in dns_servers or []],
    }
    if user_agent_token:
        dl["user_agent"] = _UA_TEMPLATE.format(token=str(user_agent_token).strip().lower())
    config = parse_config(dl, DownloadConfig, "img2dataset.download")
    engine = _engine(distributor, ray_address, spark_master, processes_count, max_shard_retry)
    return run_compat(str(url_list), str(output_folder), config, options, engine, progress=progress)


def _engine(distributor: str, ray_address: str | None, spark_master: str | None = None, processes_count: int = 1,
            max_shard_retry: int = 1) -> Any:
    from clipcrawl.pipelines.engine import make_engine
    from clipcrawl.schemas.config import ConfigError

    if distributor == "multiprocessing":
        return make_engine("local")
    if distributor == "ray":
        return make_engine("ray", address=ray_address)
    if distributor == "pyspark":  # img2dataset's pyspark_distributor: the running session, else local[processes]
        return make_engine("spark", master=spark_master, local_cores=max(1, int(processes_count)),
                           retries=max_shard_retry, what="distributor pyspark")
    raise ConfigError(f"Distributor {distributor} not supported (fix: multiprocessing, pyspark or ray)")
