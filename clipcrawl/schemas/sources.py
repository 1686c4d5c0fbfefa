"""Configs of the sources: a crawl, Common Crawl files, a URL list."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from clipcrawl.schemas.components import (
    MAX_BODY_BYTES,
    MAX_IN_FLIGHT,
    MAX_PAUSE_S,
    MAX_RETRIES,
    MAX_SAMPLES_PER_SHARD,
    MAX_TIMEOUT_S,
    MAX_WORKERS,
)
from clipcrawl.schemas.configbase import DEFAULT_USER_AGENT, Model, redact


def check_blocklists(v: list[str]) -> list[str]:
    """Blocklist files must exist (they are read before any request)."""
    for p in v:
        if not Path(p).is_file():
            raise ValueError(f"blocklist {p!r} does not exist")
    return v


# ---------------------------------------------------------------- sources
class CrawlConfig(Model):
    """Link-following crawl from seed pages (``clipcrawl crawl``)."""

    seeds: list[str] = Field(default_factory=list, description="Start URLs (http/https).")
    seeds_file: Path | None = Field(None, description="File with one seed URL per line.")
    max_pages: int = Field(1000, ge=1, le=1_000_000_000, description="Stop after fetching this many pages (total, across runs).")
    max_depth: int = Field(3, ge=0, le=1000, description="Follow links at most this many hops from a seed.")
    allowed_domains: list[str] | None = Field(
        None, description="Registered domains to stay in; default: the seeds' registered domains."
    )
    deny_patterns: list[str] = Field(default_factory=list, description="Regexes; matching URLs are never fetched.")
    concurrency: int = Field(16, ge=1, le=MAX_IN_FLIGHT, description="Pages in flight in total.")
    per_host_concurrency: int = Field(2, ge=1, le=1024, description="Pages in flight per host.")
    delay: float = Field(0.0, ge=0, le=MAX_TIMEOUT_S, description="Minimum seconds between two requests to one host.")
    user_agent: str = DEFAULT_USER_AGENT
    respect_robots: bool = True
    allow_private_networks: bool = Field(
        False, description="Allow private/loopback/link-local addresses (tests, intranets)."
    )
    timeout: float = Field(20.0, gt=0, le=MAX_TIMEOUT_S, description="Seconds per request.")
    max_page_bytes: int = Field(5_000_000, ge=1024, le=MAX_BODY_BYTES, description="Pages larger than this are dropped.")
    max_redirects: int = Field(5, ge=0, le=100)
    retries: int = Field(2, ge=0, le=MAX_RETRIES, description="Retries on timeouts, resets, 429 and 5xx.")
    revisit_after_days: float | None = Field(
        None, gt=0, le=36_500, description="In incremental runs, refetch pages older than this."
    )
    allowed_networks: list[str] = Field(
        default_factory=list, description="CIDR ranges exempt from the private-address guard (e.g. an intranet)."
    )
    rows_per_chunk: int = Field(10_000, ge=1, le=MAX_SAMPLES_PER_SHARD, description="Rows per pairs/pages Parquet chunk file.")
    respect_tdmrep: bool = Field(
        True, description="TDMRep: tdm-reservation header, /.well-known/tdmrep.json, <meta name=tdm-reservation>."
    )
    blocklists: list[str] = Field(
        default_factory=list, description="Blocklist files (URL, domain:, sha256:, md5: lines); see README."
    )
    max_retry_after: float = Field(
        120.0, gt=0, le=MAX_PAUSE_S,
        description="Cap in seconds on a host pause after 429/503 (Retry-After or 429 backoff)."
    )

    @field_validator("blocklists")
    @classmethod
    def _blocklists_exist(cls, v: list[str]) -> list[str]:
        return check_blocklists(v)

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        import ipaddress

        for c in v:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"allowed network {c!r} is not a CIDR range like 10.0.0.0/8") from None
        return v

    @field_validator("seeds")
    @classmethod
    def _http_seeds(cls, v: list[str]) -> list[str]:
        for s in v:
            if not s.lower().startswith(("http://", "https://")):
                raise ValueError(f"seed {s!r} is not an http(s) URL")
        return v

    @field_validator("seeds_file")
    @classmethod
    def _seeds_file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"seeds file {str(v)!r} does not exist")
        return v

    @model_validator(mode="after")
    def _has_seeds(self) -> CrawlConfig:
        if not self.seeds and self.seeds_file is None:
            raise ValueError("give at least one seed (seeds: [...]) or a seeds_file")
        return self


class CommonCrawlConfig(Model):
    """Pairs from Common Crawl WARC or WAT files (local paths or fsspec URLs)."""

    paths: list[str] = Field(..., min_length=1, description="WARC/WAT/ARC files or globs (gzipped or not).")
    format: Literal["auto", "warc", "wat"] = Field(
        "auto", description="auto: HTML responses and WAT metadata records both; warc/wat: only that kind."
    )
    max_records: int | None = Field(None, ge=1, le=10**12, description="Read at most this many records of each input (sampling).")
    workers: int | None = Field(None, ge=1, le=MAX_WORKERS, description="Input files read in parallel; default: CPU count.")
    pairs_per_file: int = Field(100_000, ge=1, le=MAX_SAMPLES_PER_SHARD, description="Rows per pairs/NNNNN.parquet file.")
    max_html_bytes: int = Field(5_000_000, ge=1024, le=MAX_BODY_BYTES, description="Parse at most this many bytes of one HTML page.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for remote inputs (e.g. s3fs profile); secret values are redacted "
        "in the saved config.",
    )
    blocklists: list[str] = Field(
        default_factory=list, description="Blocklist files: pairs whose image or page URL/domain is listed are dropped."
    )

    @field_serializer("storage_options")
    def _redact_secrets(self, v: dict[str, Any], info: Any) -> dict[str, Any]:
        return v if (info.context or {}).get("keep_secrets") else redact(v)  # kept only to rebuild a config

    @field_validator("blocklists")
    @classmethod
    def _blocklists_exist(cls, v: list[str]) -> list[str]:
        return check_blocklists(v)

    @field_validator("paths")
    @classmethod
    def _local_paths_exist(cls, v: list[str]) -> list[str]:
        for p in v:
            if "://" in p or any(c in p for c in "*?["):
                continue
            if not Path(p).exists():
                raise ValueError(f"Common Crawl input {p!r} does not exist")
        return v


class UrlListConfig(Model):
    """An image-URL list in one of img2dataset's input formats."""

    path: str
    input_format: Literal["auto", "parquet", "csv", "tsv", "json", "jsonl", "txt"] = "auto"
    url_col: str = "url"
    caption_col: str | None = "caption"
    save_additional_columns: list[str] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _exists(cls, v: str) -> str:
        if "://" not in v and not Path(v).exists():
            raise ValueError(f"URL list {v!r} does not exist")
        return v


class SourcesConfig(Model):
    crawl: CrawlConfig | None = None
    commoncrawl: CommonCrawlConfig | None = None
    urls: UrlListConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SourcesConfig:
        if self.crawl is None and self.commoncrawl is None and self.urls is None:
            raise ValueError("configure at least one source: crawl, commoncrawl or urls")
        return self


