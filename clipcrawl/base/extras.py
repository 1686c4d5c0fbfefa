"""Which ``pip install "clipcrawl[EXTRA]"`` adds a missing optional module.

The core install (``pip install clipcrawl``) runs ``clipcrawl demo`` end to end; heavier features
import their libraries lazily. When one is missing, :func:`extra_hint` turns the
``ModuleNotFoundError`` into one line naming the extra (the CLI exits 2 with it).
"""

from __future__ import annotations

#: top-level module -> (extra, what needs it)
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "torch": ("clip", "CLIP models other than the shipped tiny one"),
    "torchvision": ("clip", "CLIP models other than the shipped tiny one"),
    "open_clip": ("clip", "CLIP models other than the shipped tiny one"),
    "onnx": ("clip", "exporting CLIP models to ONNX"),
    "faiss": ("index", "the embedding index (index, search, serve, semantic dedup)"),
    "imagehash": ("dedup", "this dedup step"),
    "scipy": ("dedup", "this dedup step"),
    "duckdb": ("report", "the stats report"),
    "matplotlib": ("report", "the stats report's plots"),
    "s3fs": ("s3", "s3:// paths"),
    "croniter": ("cron", "scheduled runs"),
    "crontab": ("cron", "scheduled runs"),
    "cv2": ("faces", "face blurring"),
    "ray": ("ray", "the Ray engine"),
    "pyspark": ("spark", "the Spark engine (distributor pyspark)"),
    "ahocorasick": ("curation", "fast MetaCLIP entry matching"),
    "c2pa": ("provenance", "reading C2PA manifests (training-mining opt-outs, AI-generated flags)"),
    "rapidocr": ("ocr", "the text-in-image signal (--signals text)"),
    "nudenet": ("nudity", "the nudity signal (--signals nsfw)"),
}


def extra_hint(err: ModuleNotFoundError) -> str | None:
    """One line naming the extra that provides the missing module, or None when it is not optional."""
    name = (err.name or "").split(".")[0]
    if name not in OPTIONAL_MODULES:
        return None
    extra, what = OPTIONAL_MODULES[name]
    return (f"{what} needs the Python package {name!r}, which the core install leaves out "
            f'(fix: pip install "clipcrawl[{extra}]")')
