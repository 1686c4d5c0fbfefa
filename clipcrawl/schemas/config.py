"""Typed, frozen run configuration loaded from YAML.

One model per component, composed into :class:`RunConfig`. Unknown keys and wrong types are
errors (``extra="forbid"``); :func:`load_config` turns them into a :class:`ConfigError` whose
message names the file, the field and the fix, and the CLI exits with code 2 on it.
The resolved config is written next to the output with :func:`save_resolved`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

DEFAULT_USER_AGENT = "clipcrawl/0.1 (+https://github.com/clipcrawl/clipcrawl)"
#: X-Robots-Tag / meta robots directives that forbid use of an image for AI training.
NOAI_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")


class ConfigError(ValueError):
    """Unusable configuration or input. The CLI prints it on one line and exits with code 2."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# ---------------------------------------------------------------- sources
class CrawlConfig(_Model):
    """Link-following crawl from seed pages (``clipcrawl crawl``)."""

    seeds: list[str] = Field(default_factory=list, description="Start URLs (http/https).")
    seeds_file: Path | None = Field(None, description="File with one seed URL per line.")
    max_pages: int = Field(1000, ge=1, description="Stop after fetching this many pages (total, across runs).")
    max_depth: int = Field(3, ge=0, description="Follow links at most this many hops from a seed.")
    allowed_domains: list[str] | None = Field(
        None, description="Registered domains to stay in; default: the seeds' registered domains."
    )
    deny_patterns: list[str] = Field(default_factory=list, description="Regexes; matching URLs are never fetched.")
    concurrency: int = Field(16, ge=1, description="Pages in flight in total.")
    per_host_concurrency: int = Field(2, ge=1, description="Pages in flight per host.")
    delay: float = Field(0.0, ge=0, description="Minimum seconds between two requests to one host.")
    user_agent: str = DEFAULT_USER_AGENT
    respect_robots: bool = True
    allow_private_networks: bool = Field(
        False, description="Allow private/loopback/link-local addresses (tests, intranets)."
    )
    timeout: float = Field(20.0, gt=0, description="Seconds per request.")
    max_page_bytes: int = Field(5_000_000, ge=1024, description="Pages larger than this are dropped.")
    max_redirects: int = Field(5, ge=0)
    retries: int = Field(2, ge=0, description="Retries on timeouts, resets, 429 and 5xx.")
    revisit_after_days: float | None = Field(
        None, gt=0, description="In incremental runs, refetch pages older than this."
    )
    allowed_networks: list[str] = Field(
        default_factory=list, description="CIDR ranges exempt from the private-address guard (e.g. an intranet)."
    )
    rows_per_chunk: int = Field(10_000, ge=1, description="Rows per pairs/pages Parquet chunk file.")

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


class CommonCrawlConfig(_Model):
    """Pairs from Common Crawl WARC or WAT files (local paths or fsspec URLs)."""

    paths: list[str] = Field(..., min_length=1, description="WARC/WAT/ARC files or globs (gzipped or not).")
    format: Literal["auto", "warc", "wat"] = Field(
        "auto", description="auto: HTML responses and WAT metadata records both; warc/wat: only that kind."
    )
    max_records: int | None = Field(None, ge=1, description="Read at most this many records of each input (sampling).")
    workers: int | None = Field(None, ge=1, description="Input files read in parallel; default: CPU count.")
    pairs_per_file: int = Field(100_000, ge=1, description="Rows per pairs/NNNNN.parquet file.")
    max_html_bytes: int = Field(5_000_000, ge=1024, description="Parse at most this many bytes of one HTML page.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for remote inputs (e.g. s3fs profile); secret values are redacted "
        "in the saved config.",
    )

    @field_serializer("storage_options")
    def _redact_secrets(self, v: dict[str, Any]) -> dict[str, Any]:
        return _redact(v)

    @field_validator("paths")
    @classmethod
    def _local_paths_exist(cls, v: list[str]) -> list[str]:
        for p in v:
            if "://" in p or any(c in p for c in "*?["):
                continue
            if not Path(p).exists():
                raise ValueError(f"Common Crawl input {p!r} does not exist")
        return v


class UrlListConfig(_Model):
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


class SourcesConfig(_Model):
    crawl: CrawlConfig | None = None
    commoncrawl: CommonCrawlConfig | None = None
    urls: UrlListConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SourcesConfig:
        if self.crawl is None and self.commoncrawl is None and self.urls is None:
            raise ValueError("configure at least one source: crawl, commoncrawl or urls")
        return self


# ---------------------------------------------------------------- download
class DownloadConfig(_Model):
    """Image fetching and resizing, with img2dataset's semantics."""

    image_size: int = Field(256, ge=8)
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "border"
    resize_only_if_bigger: bool = False
    min_image_size: int = Field(0, ge=0, description="Smaller side below this -> failed_to_resize.")
    max_image_area: float = Field(math.inf, gt=0, description="Pixels above this -> failed_to_resize.")
    max_aspect_ratio: float = Field(math.inf, gt=0, description="Larger/smaller side above this -> failed_to_resize.")
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int | None = Field(
        None, ge=0, le=100, description="jpg/webp quality (default 95); png: zlib level 0-9 (default 9), as img2dataset."
    )
    max_decode_pixels: int = Field(
        100_000_000, ge=1, description="Header size above this many pixels -> failed_to_resize before decoding."
    )
    jpeg_draft_gap: float = Field(
        2.0, ge=0, description="Decode JPEGs DCT-scaled to >= this x the output size (0: always full decode)."
    )
    timeout: float = Field(10.0, gt=0)
    retries: int = Field(0, ge=0)
    concurrency: int = Field(64, ge=1, description="Image requests in flight in total.")
    per_host_concurrency: int = Field(16, ge=1)
    delay: float = Field(0.0, ge=0, description="Minimum seconds between two requests to one host.")
    user_agent: str = DEFAULT_USER_AGENT
    respect_robots: bool = True
    disallowed_header_directives: list[str] = Field(default_factory=lambda: list(NOAI_DIRECTIVES))
    allow_private_networks: bool = False
    allowed_networks: list[str] = Field(
        default_factory=list, description="CIDRs exempt from the private-address guard (e.g. an intranet)."
    )
    max_bytes: int = Field(30_000_000, ge=1024, description="Bodies larger than this -> failed_to_download.")
    workers: int | None = Field(None, ge=1, description="Decode/resize processes; default: CPU count.")

    @property
    def quality(self) -> int:
        """``encode_quality`` with img2dataset's per-format default."""
        if self.encode_quality is not None:
            return self.encode_quality
        return 9 if self.encode_format == "png" else 95

    @model_validator(mode="after")
    def _quality_range(self) -> DownloadConfig:
        q = self.encode_quality
        if q is not None and self.encode_format == "png" and q > 9:
            raise ValueError(f"encode_quality {q} is out of range for png: it is the zlib level 0-9 (img2dataset's meaning)")
        if q is not None and self.encode_format != "png" and q < 1:
            raise ValueError(f"encode_quality {q} is out of range for {self.encode_format}: use 1-100")
        return self


# ---------------------------------------------------------------- filters
class TextFilterConfig(_Model):
    """Caption rules applied before CLIP (cheap first)."""

    enabled: bool = True
    min_words: int = Field(1, ge=0)
    min_chars: int = Field(3, ge=0)
    max_chars: int = Field(2000, ge=1)
    drop_generic: bool = Field(True, description="Drop captions like 'image', 'photo', 'IMG_1234.jpg', URLs.")
    deny_patterns: list[str] = Field(default_factory=list, description="Regexes; matching captions are dropped.")


class ClipConfig(_Model):
    """CLIP scoring (``clipcrawl score``); see clipcrawl.filters.clip."""

    enabled: bool = True
    model: str = Field("ViT-B-32", description="open_clip model name, 'hf-hub:org/repo', or 'tiny' (shipped).")
    pretrained: str | None = Field(
        "openai", description="open_clip pretrained tag, or a local checkpoint path (.pt/.safetensors)."
    )
    threshold: float = Field(0.28, ge=-1, le=1, description="Drop pairs with clip_similarity below this.")
    precision: Literal["auto", "fp32", "fp16", "bf16", "fast"] = Field(
        "auto", description="auto: fast path on CPU, fp16 on GPU; fp32: exact open_clip path."
    )
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps.")
    batch_size: int = Field(64, ge=1)
    save_embeddings: bool = Field(False, description="Write clip-retrieval's img_emb/ text_emb/ metadata/ layout.")
    workers: int | None = Field(None, ge=1, description="Image decode/preprocess threads; default: CPU count (max 8).")
    quantize: Literal["int8", "none"] = Field(
        "int8", description="Fast CPU path: int8 dynamic quantization of the ONNX towers, or none (fp32 ONNX)."
    )
    unsafe_prompts: list[str] = Field(
        default_factory=lambda: [
            "an explicit photo of nudity", "a pornographic image", "a sexually explicit picture",
            "a photo of graphic violence and gore",
        ],
        description="Zero-shot positives of punsafe (softmax over these + safe_prompts).",
    )
    safe_prompts: list[str] = Field(
        default_factory=lambda: [
            "a safe for work photo", "a photo of a person", "a photo of an object", "a photo of a landscape",
            "a drawing", "a screenshot with text", "a product photo", "a photo of an animal",
        ],
        description="Zero-shot negatives of punsafe.",
    )
    watermark_prompts: list[str] = Field(
        default_factory=lambda: [
            "a photo with a watermark", "a stock photo with a watermark across it", "an image with a logo watermark",
        ],
        description="Zero-shot positives of pwatermark.",
    )
    clean_prompts: list[str] = Field(
        default_factory=lambda: ["a photo", "a clean photo without watermark", "an image"],
        description="Zero-shot negatives of pwatermark.",
    )


class FiltersConfig(_Model):
    text: TextFilterConfig = Field(default_factory=TextFilterConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)


# ---------------------------------------------------------------- dedup
class DedupConfig(_Model):
    """Duplicate removal; see clipcrawl.filters.dedup."""

    enabled: bool = True
    url: bool = Field(True, description="Exact: normalised URL + caption.")
    sha256: bool = Field(True, description="Exact: identical downloaded bytes.")
    pixels: bool = Field(True, description="Exact: identical resized pixels.")
    phash: bool = Field(True, description="Perceptual: pHash candidates (+ crop windows), verified on thumbnails.")
    phash_max_distance: int = Field(
        8, ge=0, le=32,
        description="Hamming distance <= k between 64-bit pHashes for a candidate. 8: resizes, JPEG q50-95 and "
        "colour shifts are found (recall >= 0.99 in bench/dedup_quality.py); crops mostly need phash_crops. "
        "1M hashes take ~15-25 s at k=8, ~70 s at k=10 (bench/dedup_phash.py).",
    )
    phash_crops: bool = Field(
        True, description="Also find crops/shifts up to ~10% per axis: candidates whose thumbnail pHash is within "
        "phash_crop_distance of a pHash of one of 35 windows of the other image (then verified). Raises variant-set "
        "crop recall from 0.49 to 0.96 (bench/dedup_quality.py).",
    )
    phash_crop_distance: int = Field(
        10, ge=0, le=32, description="Hamming distance for crop-window candidates (approximate search: radius 1 "
        "per 21-bit block, so most but not all pairs up to this distance are found).",
    )
    phash_verify_threshold: float = Field(
        0.9, ge=0, le=1,
        description="Every perceptual candidate whose images both have a thumbnail is kept only if the normalised "
        "cross-correlation of their aligned, blurred 32x32 grey thumbnails reaches this (crop/shift/scale "
        "searched), the overlap's mean grey and contrast stay within a colour shift's reach and a 4x4 grid of "
        "colours agrees. 0.9: >= 0.99 of "
        "true variant-set pairs pass, unrelated look-alikes mostly fail. 0 = no "
        "verification (candidates are accepted as found).",
    )
    semantic: bool = True
    semantic_threshold: float = Field(
        0.95, gt=0, le=1,
        description="CLIP image-embedding cosine >= tau. Kept at 0.95 for real CLIP models (ViT-B-32 and up), where "
        "it is a conservative near-duplicate level; it could not be measured offline (no real weights here).",
    )
    semantic_tiny: bool = Field(
        False,
        description="Also run semantic dedup on embeddings of the shipped tiny test model (clip_model "
        "clipcrawl-tiny). Off by default: that model was trained on coloured shapes and maps photos, textures and "
        "gradients to a few directions - on bench/dedup_quality.py's variant set its links at tau 0.95 are 91% "
        "false (dedup precision 0.51; pHash + tiny combination 0.83). So semantic dedup runs on embeddings of "
        "real CLIP models (or of unknown origin) only, unless this is set (e.g. for datasets of the tiny model's "
        "own shapes); `clipcrawl dedup --model tiny` sets it, since the model is then an explicit choice. "
        "Evaluation-set exclusion (exclude_near) uses any embeddings: there a false match only drops a sample.",
    )
    exclude_near: list[str] = Field(
        default_factory=list, description="Image folders or shards of evaluation sets to keep out."
    )
    eval_phash_max_distance: int | None = Field(
        None, ge=0, le=32, description="pHash distance for exclude_near; default phash_max_distance."
    )
    eval_semantic_threshold: float | None = Field(
        None, gt=0, le=1, description="Cosine for exclude_near; default semantic_threshold."
    )
    index: bool = Field(True, description="Also dedup against every published sample (persistent index).")
    index_dir: str | None = Field(
        None, description="Local folder of the persistent index; default DATASET/dedup."
    )


# ---------------------------------------------------------------- output
#: storage_options keys whose values are secrets: never written to runs/NNNN/config.yaml.
SECRET_OPTION_WORDS = ("key", "secret", "token", "password", "credential")


class OutputConfig(_Model):
    output_format: Literal["webdataset", "parquet", "files"] = "webdataset"
    samples_per_shard: int = Field(10_000, ge=1)
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for the dataset URL, e.g. {endpoint_url: http://host:9000} for S3-compatible "
        "stores. Prefer credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; secret values are redacted "
        "in the saved config.",
    )

    @field_serializer("storage_options")
    def _redact_secrets(self, v: dict[str, Any]) -> dict[str, Any]:
        return _redact(v)


def _redact(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: "<redacted>" if any(w in str(k).lower() for w in SECRET_OPTION_WORDS) else _redact(x)
                for k, x in v.items()}
    return v


# ---------------------------------------------------------------- run
class RunConfig(_Model):
    """Everything ``clipcrawl run CONFIG.yaml`` needs."""

    dataset: str = Field(..., description="Dataset directory or fsspec URL (s3://bucket/prefix).")
    sources: SourcesConfig
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    log_format: Literal["auto", "text", "json"] = "auto"
    engine: Literal["local", "ray"] = Field("local", description="local: this machine; ray: a Ray cluster.")
    ray_address: str | None = Field(None, description="Ray cluster address (default: RAY_ADDRESS or local).")
    ray_actors: int | None = Field(None, ge=1, description="Fetch/score actors (default: one per free CPU).")
    ray_node_ip: str | None = Field(None, description="This machine's IP as the Ray cluster knows it "
                                    "(when auto-detection picks the wrong interface).")


# ---------------------------------------------------------------- loading
_FIXES = {
    "extra_forbidden": "remove it or check its spelling against the documented fields",
    "missing": "add it",
    "literal_error": "use one of the allowed values",
}


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``FILE: field a.b: message (fix: ...)``."""
    lines = []
    for e in err.errors():
        fix = _FIXES.get(e["type"], "correct the value")
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: field {_loc(e['loc'])}: {msg} (fix: {fix})")
    return "\n".join(lines)


def parse_config(data: Any, model: type[BaseModel] = RunConfig, source: str = "<config>") -> Any:
    """Validate a mapping into ``model``; raise :class:`ConfigError` with readable lines."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: str | os.PathLike[str], model: type[BaseModel] = RunConfig) -> Any:
    """Load and validate a YAML config. Relative paths inside it resolve against its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found (fix: pass the path of a YAML file)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML: {e}".replace("\n", " ")) from None
    cwd = os.getcwd()
    try:  # validators check relative paths against the config's folder
        os.chdir(p.parent.resolve())
        cfg = parse_config(data if data is not None else {}, model, str(p))
    finally:
        os.chdir(cwd)
    return _absolutize(cfg, p.parent.resolve())


def _absolutize(cfg: Any, base: Path) -> Any:
    """Make the relative local paths of a validated config absolute against ``base``."""
    if isinstance(cfg, RunConfig):
        updates: dict[str, Any] = {}
        if "://" not in cfg.dataset and not Path(cfg.dataset).is_absolute():
            updates["dataset"] = str(base / cfg.dataset)
        src = cfg.sources
        src_up: dict[str, Any] = {}
        if src.crawl and src.crawl.seeds_file and not src.crawl.seeds_file.is_absolute():
            src_up["crawl"] = src.crawl.model_copy(update={"seeds_file": base / src.crawl.seeds_file})
        if src.urls and "://" not in src.urls.path and not Path(src.urls.path).is_absolute():
            src_up["urls"] = src.urls.model_copy(update={"path": str(base / src.urls.path)})
        if src.commoncrawl:
            paths = [p if ("://" in p or Path(p).is_absolute()) else str(base / p) for p in src.commoncrawl.paths]
            src_up["commoncrawl"] = src.commoncrawl.model_copy(update={"paths": paths})
        if src_up:
            updates["sources"] = src.model_copy(update=src_up)
        if updates:
            cfg = cfg.model_copy(update=updates)
    return cfg


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(_plain(cfg.model_dump()), sort_keys=False, allow_unicode=True)


def _plain(obj: Any) -> Any:
    """Python dump -> YAML-safe values (paths as strings; inf stays YAML's .inf)."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
