"""Arrow schemas of every artifact clipcrawl writes: the single source of truth.

Writers never build their own column lists: they call :func:`conform` with one of the
schemas below, which casts known columns, fills missing ones with nulls, drops transient
in-memory columns (image bytes, embeddings) and keeps user columns (``--save-additional-columns``)
at the end. ``tests/schemas`` asserts that every writer's output matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pyarrow as pa

TIMESTAMP = pa.timestamp("ms", tz="UTC")

# ---------------------------------------------------------------- caption facts
#: The caption candidates of an image and facts about the chosen caption, in PAIRS and SAMPLES.
#: ``caption`` is the alt text when the image has one (crawler.extract's rule); the others stay here.
CAPTION_FIELDS = (
    pa.field("alt", pa.string()),  # cleaned alt attribute (null when absent or empty)
    pa.field("figcaption", pa.string()),  # text of the enclosing <figure>'s <figcaption>
    pa.field("title", pa.string()),  # the image's title attribute
    pa.field("language", pa.string()),  # identified from the caption (clipcrawl.base.captions); ISO 639
    pa.field("caption_chars", pa.int32()),  # caption length in characters
    pa.field("caption_words", pa.int32()),  # caption length in words (\w+ runs)
)

# ---------------------------------------------------------------- provenance
#: What an image's own metadata says (XMP IPTC/PLUS, C2PA), in SAMPLES; null when the image was not read.
PROVENANCE_FIELDS = (
    pa.field("c2pa_present", pa.bool_()),  # true: a C2PA manifest store is embedded (null otherwise)
    pa.field("c2pa_validation_state", pa.string()),  # Valid | Trusted | Invalid | "unreadable: <cause>"
    pa.field("c2pa_claim_generator", pa.string()),  # the active manifest's claim generator ("name/version")
    pa.field("c2pa_training_mining", pa.string()),  # its training-mining entries: "ai_training=notAllowed,..."
    pa.field("ai_generated", pa.bool_()),  # a generative model made it (IPTC/C2PA digital source type); null: unstated
    pa.field("ai_generated_source", pa.string()),  # iptc | c2pa | iptc,c2pa
    pa.field("data_mining", pa.string()),  # IPTC/PLUS plus:DataMining value, e.g. DMI-PROHIBITED-AIMLTRAINING
    pa.field("license", pa.string()),  # licence URL or notice: the image's, else the page's
    pa.field("license_source", pa.string()),  # xmpRights:WebStatement | cc:license | dc:rights | iptc:CopyrightNotice | page
)

# ---------------------------------------------------------------- pairs
#: Candidate (image URL, caption) pairs found by the crawler or the Common Crawl reader.
PAIRS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # sample_key(url, caption)
        pa.field("url", pa.string(), nullable=False),  # absolute image URL
        pa.field("caption", pa.string()),
        pa.field("page_url", pa.string()),  # page the pair was found on
        pa.field("source", pa.string()),  # crawl | commoncrawl | list
        pa.field("caption_source", pa.string()),  # alt | figcaption | title | aria-label | wat | list ...
        *CAPTION_FIELDS,
        pa.field("page_title", pa.string()),
        pa.field("page_language", pa.string()),  # BCP-47 from <html lang> / Content-Language
        pa.field("img_width_attr", pa.int32()),  # declared width/height attributes, when present
        pa.field("img_height_attr", pa.int32()),
        pa.field("found_at", TIMESTAMP),
        pa.field("page_license", pa.string()),  # the page's rel="license" link / Creative Commons markup
    ]
)

# ---------------------------------------------------------------- pages
#: One row per page the crawler fetched or refused.
PAGES = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),  # normalised frontier URL
        pa.field("final_url", pa.string()),  # after redirects
        pa.field("status", pa.string(), nullable=False),  # PageStatus
        pa.field("error_message", pa.string()),
        pa.field("http_status", pa.int16()),
        pa.field("content_type", pa.string()),
        pa.field("charset", pa.string()),
        pa.field("depth", pa.int32()),
        pa.field("bytes", pa.int64()),
        pa.field("n_pairs", pa.int32()),
        pa.field("n_links", pa.int32()),
        pa.field("title", pa.string()),
        pa.field("language", pa.string()),
        pa.field("fetched_at", TIMESTAMP),
    ]
)

# ---------------------------------------------------------------- samples
#: One NudeNet detection: its class, score and box [x0, y0, x1, y1] as fractions of the image.
NSFW_DETECTION = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32()),
                            pa.field("box", pa.list_(pa.float32()))])
NSFW_DETECTION_LIST = pa.list_(NSFW_DETECTION)

#: img2dataset's metadata columns, in its order, then ours.
IMG2DATASET_COLUMNS: tuple[str, ...] = (
    "url",
    "caption",
    "key",
    "status",
    "error_message",
    "width",
    "height",
    "original_width",
    "original_height",
    "exif",
    "sha256",
)

SAMPLES = pa.schema(
    [
        # --- img2dataset-compatible
        pa.field("url", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # Status
        pa.field("error_message", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("exif", pa.string()),  # JSON object of EXIF tags
        pa.field("sha256", pa.string()),  # hex sha256 of the downloaded bytes
        # --- provenance (from the pairs)
        pa.field("page_url", pa.string()),
        pa.field("source", pa.string()),
        pa.field("caption_source", pa.string()),
        *CAPTION_FIELDS,
        pa.field("page_title", pa.string()),
        pa.field("page_language", pa.string()),
        pa.field("img_width_attr", pa.int32()),
        pa.field("img_height_attr", pa.int32()),
        pa.field("found_at", TIMESTAMP),  # when the crawler / reader found the pair
        pa.field("page_license", pa.string()),  # the page's licence link (pairs), kept for the license column
        # --- download details
        pa.field("mime_type", pa.string()),  # e.g. image/jpeg (decoded format, not the header)
        pa.field("bytes", pa.int64()),  # size of the downloaded body
        pa.field("http_status", pa.int16()),
        pa.field("pixel_hash", pa.string()),  # hex hash of the resized pixels (exact-pixel dedup)
        pa.field("phash", pa.uint64()),  # 64-bit perceptual hash of the image
        pa.field("num_faces", pa.int32()),  # faces detected and blurred (download.blur_faces); null when off
        pa.field("face_bboxes", pa.list_(pa.list_(pa.float32()))),  # their [x0, y0, x1, y1] fractions, pre-crop
        # --- consent and provenance, read from the original bytes (clipcrawl.crawler.imagemeta)
        *PROVENANCE_FIELDS,
        # --- CLIP scoring
        pa.field("clip_similarity", pa.float32()),  # cosine of L2-normalised embeddings
        pa.field("clip_model", pa.string()),  # "<name>/<pretrained>" or checkpoint path
        # SigLIP-style models only: sigmoid(logit_scale * clip_similarity + logit_bias), the model's own
        # calibrated pair probability; null for softmax CLIP models. Further models' scores are the
        # columns of clip_score_fields() (clipcrawl.filters.clip.multi).
        pa.field("clip_sigmoid", pa.float32()),
        # punsafe/pwatermark: ZERO-SHOT prompt scores (softmax over ClipConfig's prompt lists), uncalibrated
        # and never used to filter by default; with ClipConfig.safety_head they come from that trained head.
        pa.field("punsafe", pa.float32()),  # LAION's name
        pa.field("pwatermark", pa.float32()),
        # --- curation signals (clipcrawl.filters.signals; ``score --signals``); null when not computed
        pa.field("aesthetic", pa.float32()),  # LAION aesthetic predictor rating (1-10) on the image embedding
        pa.field("text_area", pa.float32()),  # fraction of the image covered by OCR text boxes (RapidOCR)
        pa.field("ocr_text", pa.string()),  # the text read in the image, boxes joined by " | "
        pa.field("caption_ocr_overlap", pa.float32()),  # share of the caption's words that are read in the image
        pa.field("nsfw_score", pa.float32()),  # NudeNet: highest score of an exposed-body-part detection, 0-1
        pa.field("nsfw_detections", NSFW_DETECTION_LIST),  # NudeNet's detections (every class)
        pa.field("signal_sources", pa.string()),  # which file/package produced the signals and head columns
        # --- dedup
        pa.field("duplicate_of", pa.string()),  # key of the kept representative
        pa.field("dedup_method", pa.string()),  # DedupMethod
        # --- bookkeeping
        pa.field("shard", pa.string()),  # shard id the sample was written to (e.g. "00012")
        pa.field("run", pa.int32()),  # run number that produced it (incremental runs)
    ]
)

#: Per-model score columns of the further scorers of a multi-model pass (``filters.clip.models``):
#: ``<base>_<name>`` for each base; appended after SAMPLES' columns, typed as here.
CLIP_SCORE_BASES: dict[str, pa.DataType] = {
    "clip_similarity": pa.float32(), "clip_sigmoid": pa.float32(), "clip_model": pa.string(),
}
CLIP_SCORE_NAME = re.compile(r"^(clip_similarity|clip_sigmoid|clip_model)_([a-z0-9_]{1,40})$")


def clip_score_fields(name: str) -> list[pa.Field]:
    """The columns a further scorer named ``name`` writes."""
    return [pa.field(f"{base}_{name}", t) for base, t in CLIP_SCORE_BASES.items()]


def clip_score_columns(names: Iterable[str]) -> dict[str, str]:
    """The further scorers' score columns among ``names``: similarity column -> its model column
    (``clip_similarity_l14`` -> ``clip_model_l14``), in order."""
    names = list(names)
    out = {}
    for n in names:
        m = CLIP_SCORE_NAME.match(n)
        if m and m.group(1) == "clip_similarity":
            out[n] = f"clip_model_{m.group(2)}"
    return out


#: Columns that live only in memory between stages; sinks never write them to Parquet.
IMAGE_COLUMN = "image"  # encoded (resized) image bytes
TRANSIENT_COLUMNS: frozenset[str] = frozenset({IMAGE_COLUMN, "image_embedding", "text_embedding"})

# ---------------------------------------------------------------- stats
#: Per-shard statistics; the JSON form (``NNNNN_stats.json``) is img2dataset's, plus ours.
STATS = pa.schema(
    [
        pa.field("shard", pa.string()),
        pa.field("count", pa.int64()),
        pa.field("successes", pa.int64()),
        pa.field("failed_to_download", pa.int64()),
        pa.field("failed_to_resize", pa.int64()),
        pa.field("blocked", pa.int64()),
        pa.field("filtered_text", pa.int64()),
        pa.field("failed_to_score", pa.int64()),
        pa.field("filtered_clip", pa.int64()),
        pa.field("duplicate", pa.int64()),
        pa.field("duration", pa.float64()),  # seconds
        pa.field("start_time", pa.float64()),  # unix time
        pa.field("end_time", pa.float64()),
        pa.field("bytes_downloaded", pa.int64()),
        pa.field("status_dict", pa.map_(pa.string(), pa.int64())),  # img2dataset: counts per error/status
    ]
)

ALL_SCHEMAS: dict[str, pa.Schema] = {"pairs": PAIRS, "pages": PAGES, "samples": SAMPLES, "stats": STATS}


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema``."""
    return schema.empty_table()


def conform(
    table: pa.Table,
    schema: pa.Schema,
    *,
    keep_extra: bool = True,
    drop: Iterable[str] = TRANSIENT_COLUMNS,
) -> pa.Table:
    """Return ``table`` cast to ``schema``: schema columns first, in order, with their types.

    Missing schema columns are added as nulls; columns named in ``drop`` are removed; other
    columns (user extras) are appended after the schema columns when ``keep_extra``.
    Raises ``ValueError`` naming the column when a cast is impossible or a non-nullable
    column holds nulls (a bug in the writer, never bad input).
    """
    drop = set(drop)
    n = table.num_rows
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise ValueError(f"column {field.name!r}: cannot cast {col.type} to {field.type}: {e}") from e
        else:
            col = pa.nulls(n, type=field.type)
        if not field.nullable and col.null_count:
            raise ValueError(f"column {field.name!r} is non-nullable but has {col.null_count} nulls")
        arrays.append(col)
        fields.append(field)
    if keep_extra:
        for name in table.column_names:
            if name in schema.names or name in drop:
                continue
            arrays.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def check(table: pa.Table, schema: pa.Schema) -> None:
    """Assert that ``table`` starts with exactly ``schema``'s fields (names, order, types)."""
    head = table.schema.names[: len(schema)]
    if head != schema.names:
        raise ValueError(f"columns {head} differ from schema {schema.names}")
    for field in schema:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise ValueError(f"column {field.name!r} has type {got}, schema says {field.type}")
