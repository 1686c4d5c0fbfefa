"""Configs of the processing components: download, caption rules, CLIP, dedup, output."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from clipcrawl.schemas.configbase import DEFAULT_USER_AGENT, NOAI_DIRECTIVES, Model, check_options, redact

#: JPEGs decode DCT-scaled to >= this x the output size (bench/RESULTS.md, "Resampling": with the Hamming
#: filter as "area" this is closer to img2dataset's full decode + INTER_AREA than a 2x gap with a box filter).
DEFAULT_JPEG_DRAFT_GAP = 1.25

# Upper bounds of the numeric fields (lower ones are at each field). Anything above is a typo (1e26) that
# would pass the config and fail every row. NaN is refused by every bound; inf only where a field says so.
MAX_IMAGE_SIDE = 16_384  # output side: webp's limit (16383) + 1, far above any training resolution
MAX_SOURCE_SIDE = 65_535  # JPEG's largest side
MAX_DECODE_PIXELS = 1_000_000_000  # ~3 GB of RGB per image in the decoder
MAX_BODY_BYTES = 1 << 30
MAX_TIMEOUT_S = 3600.0
MAX_PAUSE_S = 86_400.0
MAX_RETRIES = 100
MAX_IN_FLIGHT = 100_000
MAX_WORKERS = 1024
MAX_CAPTION_CHARS = 1_000_000
MAX_SAMPLES_PER_SHARD = 10_000_000


# ---------------------------------------------------------------- download
class DownloadConfig(Model):
    """Image fetching and resizing, with img2dataset's semantics."""

    image_size: int = Field(256, ge=8, le=MAX_IMAGE_SIDE, description="Target size in pixels (8-16384; webp holds "
                            "at most 16383 per side).")
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "border"
    resize_only_if_bigger: bool = False
    min_image_size: int = Field(0, ge=0, le=MAX_SOURCE_SIDE, description="Smaller side below this -> failed_to_resize.")
    max_image_area: float = Field(math.inf, gt=0, description="Pixels above this -> failed_to_resize.")
    max_aspect_ratio: float = Field(math.inf, ge=1, description="Larger/smaller side above this -> failed_to_resize.")
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int | None = Field(
        None, ge=0, le=100, description="jpg/webp quality (default 95); png: zlib level 0-9 (default 9), as img2dataset."
    )
    max_decode_pixels: int = Field(
        100_000_000, ge=1, le=MAX_DECODE_PIXELS,
        description="Header size above this many pixels -> failed_to_resize before decoding (at most 10^9)."
    )
    jpeg_draft_gap: float = Field(
        DEFAULT_JPEG_DRAFT_GAP, ge=0, le=16, description="Decode JPEGs DCT-scaled to >= this x the output size (0: always full decode)."
    )
    timeout: float = Field(10.0, gt=0, le=MAX_TIMEOUT_S, description="Seconds per request (at most an hour).")
    retries: int = Field(0, ge=0, le=MAX_RETRIES)
    concurrency: int = Field(64, ge=1, le=MAX_IN_FLIGHT, description="Image requests in flight in total.")
    per_host_concurrency: int = Field(16, ge=1, le=MAX_IN_FLIGHT)
    delay: float = Field(0.0, ge=0, le=MAX_TIMEOUT_S, description="Minimum seconds between two requests to one host.")
    user_agent: str = DEFAULT_USER_AGENT
    respect_robots: bool = True
    disallowed_header_directives: list[str] = Field(default_factory=lambda: list(NOAI_DIRECTIVES))
    allow_private_networks: bool = False
    allowed_networks: list[str] = Field(
        default_factory=list, description="CIDRs exempt from the private-address guard (e.g. an intranet)."
    )
    dns_servers: list[str] = Field(
        default_factory=list, description="DNS servers (ip or ip:port) for the image hosts; default: /etc/resolv.conf's."
    )
    max_bytes: int = Field(30_000_000, ge=1024, le=MAX_BODY_BYTES, description="Bodies larger than this -> failed_to_download.")
    workers: int | None = Field(None, ge=1, le=MAX_WORKERS,
                                description="Decode/resize threads (or processes); default: CPU count.")
    decoder: Literal["threads", "processes"] = Field(
        "threads", description="Decode/resize on threads of the downloading process (less CPU and memory per image; "
        "Pillow releases the GIL) or on processes (a decoder crash on one image fails that image alone).")
    respect_tdmrep: bool = Field(
        True, description="TDMRep: never fetch what /.well-known/tdmrep.json reserves; drop responses with "
        "tdm-reservation: 1 (failed_to_download, reason recorded).",
    )
    respect_image_metadata: bool = Field(
        True, description="Refuse images whose own metadata opts out of AI training (IPTC/PLUS plus:DataMining "
        "DMI-PROHIBITED*, C2PA/CAWG training-mining notAllowed/constrained) or cannot be read safely "
        "(failed_to_download, reason recorded). Provenance columns are recorded either way.",
    )
    respect_ai_txt: bool = Field(
        True, description="Spawning ai.txt: never fetch what the origin's /ai.txt disallows (by path or file "
        "type; failed_to_download, reason recorded).",
    )
    blocklists: list[str] = Field(
        default_factory=list, description="Blocklist files, one rule a line: URL, domain:example.com (subdomains "
        "too), sha256:<hex>, md5:<hex>. URL/domain rules before any request, hash rules on the downloaded bytes; "
        "status blocked.",
    )
    max_retry_after: float = Field(
        120.0, gt=0, le=MAX_PAUSE_S, description="Cap in seconds on a host pause after 429/503 (Retry-After, or exponential "
        "backoff on repeated 429s); the pause holds for every later request to the host.",
    )
    blur_faces: bool = Field(
        False, description="Detect faces (OpenCV's bundled Haar cascade; pip install clipcrawl[faces]) and blur them "
        "before encoding; num_faces and face_bboxes are recorded.",
    )
    bbox_col: str | None = Field(
        None, description="img2dataset's bbox_col: an input column of [x0, y0, x1, y1] boxes (relative 0-1) to "
        "blur before encoding.",
    )

    @field_validator("blocklists")
    @classmethod
    def _blocklists_exist(cls, v: list[str]) -> list[str]:
        from clipcrawl.schemas.sources import check_blocklists

        return check_blocklists(v)
    skip_reencode: bool = Field(
        False, description="Keep the downloaded bytes when no resize is needed and the format already is encode_format.")
    disable_all_reencoding: bool = Field(
        False, description="Keep the downloaded bytes as they are (no decode checks, no resize; img2dataset's flag).")
    upscale_interpolation: Literal["nearest", "linear", "bilinear", "cubic", "bicubic", "area", "lanczos",
                                   "lanczos4"] = "lanczos"
    downscale_interpolation: Literal["nearest", "linear", "bilinear", "cubic", "bicubic", "area", "lanczos",
                                     "lanczos4"] = "area"
    ignore_ssl_certificate: bool = Field(False, description="Do not verify TLS certificates (self-signed hosts).")

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
class TextFilterConfig(Model):
    """Caption rules applied before CLIP (cheap first)."""

    enabled: bool = True
    min_words: int = Field(1, ge=0, le=MAX_CAPTION_CHARS)
    min_chars: int = Field(3, ge=0, le=MAX_CAPTION_CHARS)
    max_chars: int = Field(2000, ge=1, le=MAX_CAPTION_CHARS)
    drop_generic: bool = Field(True, description="Drop captions like 'image', 'photo', 'IMG_1234.jpg', URLs.")
    deny_patterns: list[str] = Field(default_factory=list, description="Regexes; matching captions are dropped.")
    languages: list[str] = Field(
        default_factory=list, description="Keep only captions identified as one of these ISO 639 codes "
        "(e.g. [en]); empty: any language. Identified offline with fastText lid.176 (clipcrawl.base.captions).")

    @field_validator("languages")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [x.strip().lower() for x in v if x.strip()]


class ClipModelSpec(Model):
    """One scorer of ``filters.clip.models``: an open_clip model and where its weights/tokenizer come from."""

    model: str = Field(..., description="open_clip model name, 'hf-hub:org/repo', or 'tiny' (shipped).")
    pretrained: str | None = Field("openai", description="Pretrained tag, or a local checkpoint file/folder.")
    tokenizer: str | None = Field(None, description="A local tokenizer folder (or HF name) replacing the model's own.")
    name: str | None = Field(
        None, pattern=r"^[a-z0-9_]{1,40}$",
        description="Column suffix: clip_similarity_<name> (default: from the model name, e.g. vit_l_14). "
        "Ignored for the first model, whose score is clip_similarity.")


#: Score columns a rule or ``--top-fraction`` can rank by: clip_similarity, clip_sigmoid, their
#: ``_<name>`` forms for further models (clipcrawl.filters.clip.multi), punsafe, pwatermark.
SCORE_COLUMN_PATTERN = r"^(clip_similarity|clip_sigmoid)(_[a-z0-9_]{1,40})?$|^(punsafe|pwatermark)$"


class ClipConfig(Model):
    """CLIP scoring (``clipcrawl score``); see clipcrawl.filters.clip."""

    enabled: bool = True
    model: str = Field("ViT-B-32", description="open_clip model name, 'hf-hub:org/repo', or 'tiny' (shipped).")
    pretrained: str | None = Field(
        "openai", description="open_clip pretrained tag, or a local checkpoint path (.pt/.safetensors)."
    )
    tokenizer: str | None = Field(
        None, description="Local tokenizer folder (HF save_pretrained() files, or a CLIP BPE *.txt.gz) or HF name "
        "replacing the model's own (SigLIP / MetaCLIP 2 tokenizers download with the weights).")
    models: list[ClipModelSpec] = Field(
        default_factory=list, description="Several scorers in one pass (one image decode shared): the first is "
        "model/pretrained/tokenizer (its cosine is clip_similarity), each further one writes "
        "clip_similarity_<name> (+ clip_sigmoid_<name> for SigLIP) and clip_model_<name>.")
    threshold: float = Field(0.28, ge=-1, le=1, description="Drop pairs with clip_similarity below this (-1: no absolute cut).")
    threshold_by: str = Field("clip_similarity", pattern=SCORE_COLUMN_PATTERN,
                              description="The score column the threshold applies to (e.g. clip_similarity_vit_l_14).")
    top_fraction: float | None = Field(
        None, gt=0, le=1, description="Keep only this fraction of scored candidates with the highest clip_similarity, "
        "ranked across the whole dataset (not per shard); re-applicable without rescoring (clipcrawl.filters.clip.cut).")
    top_fraction_by: str = Field("clip_similarity", pattern=SCORE_COLUMN_PATTERN,
                                 description="The score column top_fraction ranks by (any model's).")
    max_punsafe: float | None = Field(None, ge=0, le=1, description="Drop pairs with punsafe above this.")
    max_pwatermark: float | None = Field(None, ge=0, le=1, description="Drop pairs with pwatermark above this.")
    precision: Literal["auto", "fp32", "fp16", "bf16", "fast"] = Field(
        "auto", description="auto: fast path on CPU, fp16 on GPU; fp32: exact open_clip path."
    )
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps.")
    batch_size: int = Field(64, ge=1, le=65_536)
    save_embeddings: bool = Field(False, description="Write clip-retrieval's img_emb/ text_emb/ metadata/ layout.")
    workers: int | None = Field(None, ge=1, le=MAX_WORKERS,
                                description="Image decode/preprocess threads; default: CPU count (max 8).")
    quantize: Literal["int8", "none"] = Field(
        "int8", description="Fast CPU path: int8 dynamic quantization of the ONNX towers, or none (fp32 ONNX)."
    )
    unsafe_head: str | None = Field(
        None, description="Local checkpoint of a trained classifier head on CLIP image embeddings (LAION-style "
        "linear/MLP NSFW head; .pt/.safetensors/.npz) that replaces the zero-shot punsafe. Never used to filter.",
    )
    watermark_head: str | None = Field(
        None, description="Local checkpoint of a trained watermark head that replaces the zero-shot pwatermark.",
    )
    unsafe_prompts: list[str] = Field(
        default_factory=lambda: [
            "an explicit photo of nudity", "a pornographic image", "a sexually explicit picture",
            "a photo of graphic violence and gore",
        ],
        description="Zero-shot positives of punsafe (softmax over these + safe_prompts). Zero-shot scores are "
        "uncalibrated (noise with the tiny model): recorded, never used to filter.",
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

    @model_validator(mode="before")
    @classmethod
    def _first_model(cls, data: Any) -> Any:
        """``models: [...]`` given: the first one is the primary model (model/pretrained/tokenizer)."""
        if isinstance(data, dict) and data.get("models"):
            first = data["models"][0]
            first = first.model_dump() if hasattr(first, "model_dump") else dict(first)
            data = {**data, "model": first.get("model", data.get("model")), "pretrained": first.get("pretrained", "openai"),
                    "tokenizer": first.get("tokenizer")}
        return data


#: licence ids ``filters.image.licenses`` / ``--licenses`` accept (clipcrawl.filters.provenance.license_id)
LICENSE_IDS = ("cc0", "pdm", "cc-by", "cc-by-sa", "cc-by-nd", "cc-by-nc", "cc-by-nc-sa", "cc-by-nc-nd")


class ImageFilterConfig(Model):
    """Rules on the downloaded image (clipcrawl.filters.images.rules): status filtered_image."""

    enabled: bool = True
    min_side: int = Field(0, ge=0, le=MAX_SOURCE_SIDE, description="Drop images whose original smaller side is below this (pixels).")
    max_aspect_ratio: float = Field(math.inf, ge=1, description="Drop images whose larger/smaller side exceeds this.")
    min_bytes: int = Field(0, ge=0, le=MAX_BODY_BYTES, description="Drop images whose downloaded body is smaller than this (bytes).")
    exclude_ai_generated: bool = Field(
        False, description="Drop images whose IPTC or C2PA metadata says a generative model made them (ai_generated).")
    licenses: list[str] = Field(
        default_factory=list, description="Keep only images under one of these licences (cc0, pdm, cc-by, cc-by-sa, "
        "cc-by-nd, cc-by-nc, cc-by-nc-sa, cc-by-nc-nd), from the image's metadata or else its page; [] keeps all.")

    @field_validator("licenses")
    @classmethod
    def _known_licenses(cls, v: list[str]) -> list[str]:
        out = [x.strip().lower() for x in v if x.strip()]
        bad = [x for x in out if x not in LICENSE_IDS]
        if bad:
            raise ValueError(f"unknown licence {', '.join(bad)}; use {', '.join(LICENSE_IDS)}")
        return out


class BalanceConfig(Model):
    """MetaCLIP balancing (clipcrawl.filters.metaclip): status filtered_balance."""

    enabled: bool = False
    entries: str | None = Field(
        None, description="Entry list, one per line (MetaCLIP's metadata); default: the small list shipped in "
        "clipcrawl/assets/metaclip/ (see its PROVENANCE.md).")
    t: int = Field(20_000, ge=1, le=10**12, description="Entries matched by more than t pairs are sampled down to about t "
                   "(MetaCLIP: 20k for 400M pairs, 170k for 2.5B).")
    seed: int = Field(0, ge=-(2**63), le=2**63 - 1, description="Seed of the sampling RNG (the same seed gives the same kept set).")
    keep_unmatched: bool = Field(False, description="Keep pairs that match no entry (MetaCLIP drops them).")


SIGNAL_NAMES = ("text", "nsfw", "aesthetic")
SIGNAL_COLUMNS = ("aesthetic", "text_area", "caption_ocr_overlap", "nsfw_score")  # the ranked/filtered ones


class SignalsConfig(Model):
    """Curation signals beyond the CLIP score (clipcrawl.filters.signals): computed by ``score``/``run``,
    decided over the whole dataset with status filtered_image (re-cuts never rescore).
    YAML ``filters.signals: [text, nsfw]`` is short for ``filters.signals.compute: [text, nsfw]``."""

    compute: list[Literal["text", "nsfw", "aesthetic"]] = Field(
        default_factory=list, description="Signals to compute: text (RapidOCR, extra [ocr]), nsfw (NudeNet, extra "
        "[nudity]), aesthetic (LAION's aesthetic head on the CLIP image embedding; needs aesthetic_head).")
    aesthetic_head: str | None = Field(
        None, description="Local file of LAION's aesthetic predictor (improved-aesthetic-predictor's "
        "sac+logos+ava1-l14-linearMSE.pth or the v1 linear head); its input width must be the CLIP model's.")
    threads: int | None = Field(None, ge=1, le=MAX_WORKERS, description="CPU threads for the detectors "
                                "(default: CPU count, max 8).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Detectors on ONNX Runtime's CUDA provider "
                                                   "when it is installed and a GPU is there (auto), or cpu.")
    min_aesthetic: float | None = Field(None, description="Drop rows whose aesthetic rating is below this.")
    max_text_area: float | None = Field(None, ge=0, le=1, description="Drop rows whose text covers more of the image.")
    max_caption_ocr_overlap: float | None = Field(
        None, ge=0, le=1, description="Drop 'caption spells the image' pairs: more than this share of the caption's "
        "words is text read in the image (T-MARS/DFN-style; e.g. 0.5).")
    max_nsfw_score: float | None = Field(None, ge=0, le=1, description="Drop rows whose NudeNet score is above this.")
    top_fraction: float | None = Field(None, gt=0, le=1, description="Keep only this fraction of scored rows with "
                                       "the highest top_by, ranked across the whole dataset.")
    top_by: Literal["aesthetic", "text_area", "caption_ocr_overlap", "nsfw_score"] = Field(
        "aesthetic", description="The column top_fraction ranks by (high first; text_area, caption_ocr_overlap "
        "and nsfw_score rank low first: the cleanest stay).")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return {"compute": list(v)}
        if isinstance(v, str):
            return {"compute": [x.strip() for x in v.split(",") if x.strip()]}
        return v

    @field_validator("compute")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    def has_rules(self) -> bool:
        return any(x is not None for x in (self.min_aesthetic, self.max_text_area, self.max_caption_ocr_overlap,
                                           self.max_nsfw_score, self.top_fraction))


class FiltersConfig(Model):
    text: TextFilterConfig = Field(default_factory=TextFilterConfig)
    image: ImageFilterConfig = Field(default_factory=ImageFilterConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)


# ---------------------------------------------------------------- dedup
class DedupConfig(Model):
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
        "phash_crop_distance of a pHash of one of 43 windows (one-sided and centred crops) of the other image (then verified). Raises variant-set "
        "crop recall from 0.49 to 0.96 (bench/dedup_quality.py).",
    )
    phash_crop_distance: int = Field(
        10, ge=0, le=32, description="Hamming distance for crop-window candidates (approximate search: radius 1 "
        "per 21-bit block, so most but not all pairs up to this distance are found).",
    )
    phash_verify_threshold: float = Field(
        0.95, ge=0, le=1,
        description="Every perceptual candidate whose images both have a thumbnail is kept only if the normalised "
        "cross-correlation of their aligned, blurred 32x32 grey thumbnails reaches this (crop/shift/scale "
        "searched), the overlap's mean grey and contrast stay within a colour shift's reach and a 4x4 grid of "
        "colours agrees. 0.95 (was 0.9 until two icons of different shapes on one background matched at 0.94 "
        "in the demo): on a 2,325-image variant set dedup recall 0.970 / precision 0.992 (0.980 / 0.990 at "
        "0.9; bench/dedup_quality.py). 0 = no verification (candidates are accepted as found).",
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
    partitions: int = Field(
        1, ge=1, le=64,
        description="Partitions of the persistent index (DATASET/dedup/part-NN): lookups and inserts run on P "
        "partitions (Ray actors on the Ray engine, threads locally) with the single index's decisions; 1 = one "
        "index in the driver. See clipcrawl.filters.dedup.partitioned.",
    )
    index_dir: str | None = Field(
        None, description="Local folder of the persistent index; default DATASET/dedup."
    )


# ---------------------------------------------------------------- output
class ExportTarget(Model):
    """One ``clipcrawl export`` that ``run`` redoes after each run (resumable: only what changed is rewritten)."""

    format: Literal["mds", "litdata", "hf", "datacomp-uids"] = Field(
        ..., description="mds (MosaicML streaming), litdata, hf (Hugging Face Parquet + card), datacomp-uids.")
    out: str = Field(..., min_length=1, max_length=4096, description="Folder or fsspec URL outside the dataset.")
    columns: list[str] | None = Field(None, max_length=1000, description="Metadata columns; default: export's.")
    chunk_mb: int = Field(64, ge=1, le=4096, description="MDS shard / LitData chunk size (their writers hold one).")


class OutputConfig(Model):
    output_format: Literal["webdataset", "parquet", "files"] = "webdataset"
    exports: list[ExportTarget] = Field(
        default_factory=list, max_length=16,
        description="Exports for other loaders, refreshed after every run (clipcrawl export's formats).")
    samples_per_shard: int = Field(10_000, ge=1, le=MAX_SAMPLES_PER_SHARD)
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for the dataset URL, e.g. {endpoint_url: http://host:9000} for S3-compatible "
        "stores. Prefer credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; secret values are redacted "
        "in the saved config.",
    )

    @field_validator("storage_options")
    @classmethod
    def _bounded(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_options(v)  # the redaction of the saved config walks it: no aliases bomb, no cycle

    @field_serializer("storage_options")
    def _redact_secrets(self, v: dict[str, Any], info: Any) -> dict[str, Any]:
        return v if (info.context or {}).get("keep_secrets") else redact(v)  # kept only to rebuild a config
