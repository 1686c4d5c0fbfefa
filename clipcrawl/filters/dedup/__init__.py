"""Deduplication: exact (normalised URL + caption, sha256, decoded pixels), perceptual (pHash
within Hamming distance k, multi-index hashing) and semantic (CLIP image-embedding cosine, faiss),
within a batch, across runs (persistent index under ``DATASET/dedup``) and against evaluation sets.

Entry points: :class:`MarkDuplicates` (the pipeline stage), :class:`DedupIndex` (the persistent
index), :func:`sync_index` / :func:`rebuild_index`, and the fingerprint functions
:func:`pixel_hash`, :func:`phash`, :func:`image_hashes` the downloader calls.
Heavy libraries (faiss, scipy, PIL, torch) are imported inside the functions that use them.
"""

from clipcrawl.filters.dedup.columns import Fingerprints, fingerprints
from clipcrawl.filters.dedup.hamming import HammingIndex, self_join
from clipcrawl.filters.dedup.hashes import image_hashes, normalize_url, phash, pixel_hash, url_caption_hash
from clipcrawl.filters.dedup.rebuild import rebuild_index, sync_index
from clipcrawl.filters.dedup.semantic import EmbeddingIndex
from clipcrawl.filters.dedup.stage import MarkDuplicates
from clipcrawl.filters.dedup.store import DedupIndex

__all__ = [
    "DedupIndex",
    "EmbeddingIndex",
    "Fingerprints",
    "HammingIndex",
    "MarkDuplicates",
    "fingerprints",
    "image_hashes",
    "normalize_url",
    "phash",
    "pixel_hash",
    "rebuild_index",
    "self_join",
    "sync_index",
    "url_caption_hash",
]
