"""The ``download`` pass: img2dataset's loop, input -> shards -> FetchImages -> write_shard.

Input shards come from :func:`~clipcrawl.pipelines.inputs.plan_input_shards` (streamed, the same
input always gives the same shards: ``samples_per_shard`` rows each, however the input is split into
files; a download started with the older per-file shards resumes with them, :func:`resume_layout`).
A finished shard (its ``_stats.json`` exists) is skipped, so a rerun resumes; with ``retry_failed`` its failed_to_download rows are fetched again and the shard is
rewritten (img2dataset #452). Shards stream (:attr:`ShardPass.streaming`): rows are fetched in chunks of
``chunk_rows`` and each finished chunk is appended to the shard's tar while the next ones download, so memory
holds a few chunks' images whatever the shard size or the number of URLs; the Parquet (no images) and
``_stats.json`` are written when the shard's last chunk is in.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.progress import log
from clipcrawl.base.shardfiles import ShardRef, is_done, list_shards, shard_images
from clipcrawl.base.stage import set_column
from clipcrawl.base.storage import configure_storage, read_parquet, remove
from clipcrawl.pipelines.fetch_images import FetchImages
from clipcrawl.pipelines.inputs import InputShard, find_inputs, plan_input_shards
from clipcrawl.pipelines.lock import hold_dataset
from clipcrawl.pipelines.shardloop import ShardFailure, ShardPass, run_pass
from clipcrawl.pipelines.writer import ShardStream, write_shard
from clipcrawl.schemas.config import ConfigError, DownloadConfig, OutputConfig, UrlListConfig
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN


@dataclass
class DownloadSummary:
    out: str
    shards_written: int = 0
    shards_skipped: int = 0
    shards_retried: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    fetched: int = 0  # rows fetched in this run (skipped shards not counted)
    blocked_private: int = 0  # of those, refused as private/loopback addresses (--allow-private-networks)
    bytes_downloaded: int = 0
    duration: float = 0.0
    failures: list[ShardFailure] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.fetched / self.duration if self.duration > 0 else 0.0

    def count(self, statuses: list[str]) -> None:
        for s in statuses:
            self.status_counts[s] = self.status_counts.get(s, 0) + 1


@dataclass
class DownloadJob:
    shard: InputShard
    ref: ShardRef
    mode: Literal["new", "skip", "retry"]

    @property
    def name(self) -> str:
        return self.ref.name


@dataclass
class ShardWritten:
    mode: str
    statuses: list[str]
    fetched: int = 0
    nbytes: int = 0
    stats: dict[str, Any] | None = None  # the shard's _stats.json (img2dataset mode's progress lines)
    blocked_private: int = 0  # rows refused as private/loopback addresses


class DownloadPass(ShardPass):
    name = "download"
    streaming = True
    chunk_rows = 256

    def __init__(self, config: DownloadConfig, output: OutputConfig, summary: DownloadSummary) -> None:
        super().__init__()
        self.config, self.output, self.summary = config, output, summary
        self.stages = [FetchImages(config)]
        if config.blocklists:  # URL/domain/page rules before any request (hash rules run in the Fetcher)
            from clipcrawl.filters.block import BlockUrls

            self.stages.insert(0, BlockUrls(config.blocklists))

    # ---------------------------------------------------------------- driver: which shards to do
    def jobs(self, urls: UrlListConfig, out: str, retry_failed: bool):
        per_file = resume_layout(urls, out, self.output.samples_per_shard) == "per_file"
        for shard in plan_input_shards(urls, self.output.samples_per_shard, per_file=per_file):
            ref = ShardRef.of(out, shard.id)
            mode: Literal["new", "skip", "retry"] = "new"
            if is_done(ref):
                old = _check_same_input(ref, shard.table)
                failed = pc.any(pc.equal(old.column("status"), Status.FAILED_TO_DOWNLOAD.value)).as_py()
                mode = "retry" if retry_failed and failed else "skip"
            yield DownloadJob(shard, ref, mode)

    # ---------------------------------------------------------------- worker
    def read(self, job: DownloadJob) -> pa.Table:
        if job.mode == "new":
            return job.shard.table
        table = read_parquet(job.ref.parquet)
        if job.mode == "skip":
            return table.select(["status"])
        idx = _failed_rows(table)
        sub = table.take(pa.array(idx, pa.int64()))
        sub = set_column(sub, "status", pa.array([Status.SUCCESS.value] * len(idx), pa.string()))
        return set_column(sub, "error_message", pa.nulls(len(idx), pa.string()))

    def stages_for(self, job: DownloadJob, table: pa.Table) -> list:
        return [] if job.mode == "skip" else self.stages

    def write(self, job: DownloadJob, chunks: Iterable[pa.Table]) -> ShardWritten:
        if job.mode != "new":  # skip: statuses only; retry: the failed rows of one shard, merged
            table = pa.concat_tables(list(chunks))
            if job.mode == "skip":
                return ShardWritten("skip", table.column("status").to_pylist())
            return self._write_retried(job, table)
        start = time.time()
        statuses: list[str] = []
        nbytes = private = 0
        with ShardStream(job.ref, output_format=self.output.output_format, image_ext=self.config.encode_format,
                         start_time=start) as w:
            for chunk in chunks:
                chunk = set_column(chunk, "shard", pa.array([job.ref.name] * chunk.num_rows, pa.string()))
                statuses += chunk.column("status").to_pylist()
                nbytes += _nbytes(chunk)
                private += count_private_refusals(chunk)
                w.add(chunk)
            w.finish(nbytes, empty=job.shard.table)
        fetched = sum(1 for s in statuses if s != Status.DUPLICATE.value)
        return ShardWritten(job.mode, statuses, fetched, nbytes, blocked_private=private)

    def _write_retried(self, job: DownloadJob, table: pa.Table) -> ShardWritten:
        start = time.time()
        fetched = sum(1 for s in table.column("status").to_pylist() if s != Status.DUPLICATE.value)
        table = self._merge_retried(job.ref, table)
        table = set_column(table, "shard", pa.array([job.ref.name] * table.num_rows, pa.string()))
        nbytes = _nbytes(table)
        write_shard(job.ref, table, output_format=self.output.output_format, image_ext=self.config.encode_format,
                    start_time=start, bytes_downloaded=nbytes)
        log.info("shard %s: retried %d failed downloads", job.ref.name, fetched)
        return ShardWritten(job.mode, table.column("status").to_pylist(), fetched, nbytes,
                            blocked_private=count_private_refusals(table))

    def _merge_retried(self, ref: ShardRef, new: pa.Table) -> pa.Table:
        """The finished shard with its retried rows replaced, and the kept images of the others."""
        table = read_parquet(ref.parquet)
        idx = _failed_rows(table)
        images = shard_images(ref)
        for ext in ("jpg", "png", "webp"):  # output_format parquet: the image column is rewritten below
            if ext in table.column_names and table.schema.field(ext).type == pa.binary():
                table = table.drop_columns([ext])
        merged = {}
        for name in table.column_names:
            values = table.column(name).to_pylist()
            if name in new.column_names:
                for j, v in zip(idx, new.column(name).to_pylist()):
                    values[j] = v
            merged[name] = pa.array(values, table.schema.field(name).type)
        keys, ok = merged["key"].to_pylist(), merged["status"].to_pylist()
        image_col = [images.get(k) if s == Status.SUCCESS.value else None for k, s in zip(keys, ok)]
        for j, img in zip(idx, new.column(IMAGE_COLUMN).to_pylist()):
            image_col[j] = img
        merged[IMAGE_COLUMN] = pa.array(image_col, pa.binary())
        remove(ref.stats)  # not done while rewriting: a crash here means a plain resume redoes the shard
        return pa.table(merged)

    # ---------------------------------------------------------------- driver: in order
    def publish(self, job: DownloadJob, result: ShardWritten) -> None:
        s = self.summary
        s.count(result.statuses)
        s.fetched += result.fetched
        s.blocked_private += result.blocked_private
        s.bytes_downloaded += result.nbytes
        if result.mode == "skip":
            s.shards_skipped += 1
        elif result.mode == "retry":
            s.shards_retried += 1
        else:
            s.shards_written += 1


#: the address guard's refusals (:mod:`clipcrawl.crawler.netguard`: a literal IP, or a name resolving to one)
PRIVATE_REFUSAL = r"address \S+ is not public \(|resolves to non-public address"


def count_private_refusals(table: pa.Table) -> int:
    """Rows refused because their host is a private/loopback/... address (``--allow-private-networks``)."""
    if "error_message" not in table.column_names or table.num_rows == 0:
        return 0
    hits = pc.match_substring_regex(table.column("error_message"), PRIVATE_REFUSAL)
    return int(pc.sum(pc.fill_null(hits, False)).as_py() or 0)


def _nbytes(table: pa.Table) -> int:
    return int(pc.sum(table.column("bytes")).as_py() or 0) if "bytes" in table.column_names else 0


def _failed_rows(table: pa.Table) -> list[int]:
    return [i for i, s in enumerate(table.column("status").to_pylist()) if s == Status.FAILED_TO_DOWNLOAD.value]


def resume_layout(urls: UrlListConfig, out: str, samples_per_shard: int) -> Literal["spanning", "per_file"]:
    """How ``out``'s shards cut the input: ``spanning`` (``samples_per_shard`` rows whatever the input files,
    :func:`~clipcrawl.pipelines.inputs.plan_input_shards`), or ``per_file`` for a download started before
    that rule (each input file cut on its own), so that it still resumes. Decided on the last finished
    shard (where the two layouts differ, if they differ before it); a new folder is ``spanning``."""
    done = [r for r in list_shards(out) if r.root == out.rstrip("/")]
    if not done or len(find_inputs(urls)) < 2:
        return "spanning"
    last = done[-1]
    try:
        keys = read_parquet(last.parquet, columns=["key"]).column("key").to_pylist()
    except Exception:  # noqa: BLE001 - unreadable: the plan's own check reports it
        return "spanning"
    for layout in ("spanning", "per_file"):
        for shard in plan_input_shards(urls, samples_per_shard, per_file=layout == "per_file"):
            if shard.id == last.id:
                if shard.table.column("key").to_pylist() == keys:
                    if layout == "per_file":
                        log.info("%s: resuming with the per-file shards this download was started with", out)
                    return layout  # type: ignore[return-value]
                break
    return "spanning"  # neither: _check_same_input names the shard that differs


def _check_same_input(ref: ShardRef, planned: pa.Table) -> pa.Table:
    old = read_parquet(ref.parquet, columns=["key", "status"])
    if old.column("key").to_pylist() != planned.column("key").to_pylist():
        raise ConfigError(
            f"{ref.parquet}: this finished shard holds other samples than input shard {ref.name} "
            f"(fix: resume with the same input and --samples-per-shard, or write to a new --out)"
        )
    return old


def download(urls: UrlListConfig, out: str, config: DownloadConfig | None = None,
             output: OutputConfig | None = None, retry_failed: bool = False, engine: Any = None) -> DownloadSummary:
    """Download ``urls`` into img2dataset-compatible shards under ``out``; resumable."""
    config, output = config or DownloadConfig(), output or OutputConfig()
    out = str(out).rstrip("/")
    configure_storage(out, output.storage_options)
    summary = DownloadSummary(out)
    p = DownloadPass(config, output, summary)
    t0 = time.monotonic()
    with hold_dataset(out, create=True):  # two downloads into one folder: the second exits 3 (both would fetch every URL)
        summary.failures = run_pass(p, p.jobs(urls, out, retry_failed), engine)
    summary.duration = time.monotonic() - t0
    return summary
