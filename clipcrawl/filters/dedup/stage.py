"""``MarkDuplicates``: every enabled dedup method, within the batch and against the index.

Order per batch: evaluation sets first (pHash, then semantic), then for each method (url, sha256,
pixels, phash, semantic) the reference sets (published samples, then earlier batches of this run)
and then the batch itself, grouped by the keep rule (see :mod:`.groups`). Only rows still
``success`` take part; a dropped row gets status ``duplicate``, ``duplicate_of`` (the kept key, or
the eval image's name), ``dedup_method`` and ``error_message = "dedup: ..."``.

Published samples are immutable, so a new sample matching one is always the duplicate. The kept
rows of each batch are remembered (pending) so later batches of the run dedup against them;
:meth:`MarkDuplicates.commit` writes them to ``DATASET/dedup`` once the run has published its
shards (a run that dies before that leaves the index as it was; the next run's :func:`sync_index`
catches up from the published shards anyway). Run the stage in one process per dataset.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from clipcrawl.base.progress import log
from clipcrawl.base.stage import Stage, mark, ok_mask, set_column
from clipcrawl.filters.clip.model import TINY_ALIASES
from clipcrawl.filters.dedup.columns import THUMB_COLUMN, Fingerprints, fill_image_hashes, fingerprints
from clipcrawl.filters.dedup.groups import Marks, keep_rank
from clipcrawl.filters.dedup.match import Hits, Reference, group_exact, group_phash, group_semantic
from clipcrawl.filters.dedup.perceptual import Rule
from clipcrawl.filters.dedup.store import DedupIndex
from clipcrawl.schemas.config import ClipConfig, DedupConfig
from clipcrawl.schemas.status import DedupMethod, Status

_EXACT_TEXT = {
    "url": "same normalised URL and caption as",
    "sha256": "same image bytes (sha256) as",
    "pixels": "same decoded pixels as",
}


class HashImages(Stage):
    """The image fingerprints :class:`MarkDuplicates` needs (pixel hash, pHash, thumbnail), computed where
    the rows are (a worker, a Ray actor) instead of on the driver that dedups shard after shard. Rows
    already fingerprinted are left alone, so MarkDuplicates then only reads them: same values, same
    decisions. Run it after every stage that may drop rows (only rows still ``success`` are hashed)."""

    name: ClassVar[str] = "fingerprints"

    def __init__(self, config: DedupConfig | None = None):
        self.config = config or DedupConfig()

    def process(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        if not cfg.enabled or not (cfg.pixels or cfg.phash) or table.num_rows == 0:
            return table
        active = ok_mask(table)
        if not active.any():
            return table
        return fill_image_hashes(table, np.flatnonzero(active), thumbnails=cfg.phash)


class MarkDuplicates(Stage):
    name: ClassVar[str] = "dedup"
    _transient = ("index", "_eval", "_base", "_layers", "_ranges", "_base_range")

    def __init__(self, config: DedupConfig | None = None, dataset: str | None = None,
                 clip: ClipConfig | None = None, *, sync: bool = True):
        self.config = config or DedupConfig()
        self.dataset = dataset
        self.clip = clip
        self.sync = sync
        self.index: DedupIndex | None = None
        self._eval: Reference | None = None
        self._base: Reference | None = None
        self._layers: list[Reference] = []
        self._ranges: list[tuple[int, int, str | None]] = []  # partitioned index: layers as sequence ranges
        self._base_range: tuple[int, int, str | None] | None = None
        self.counts: dict[str, int] = {m.value: 0 for m in DedupMethod}
        self._warned_tiny = False

    # ---------------------------------------------------------------- setup
    @property
    def index_dir(self) -> str | None:
        if not self.config.index:
            return None
        if self.config.index_dir:
            return self.config.index_dir
        from clipcrawl.base.layout import DatasetLayout

        return DatasetLayout(self.dataset).dedup_index if self.dataset else None

    def setup(self) -> None:
        self._eval, self._base, self._layers, self._ranges, self._base_range = None, None, [], [], None
        from clipcrawl.filters.dedup.partitioned import open_index

        self.index = open_index(self.index_dir, self.config.partitions)  # P = 1: a DedupIndex
        if self.dataset and self.config.index and self.sync:
            from clipcrawl.filters.dedup.rebuild import sync_index

            sync_index(self.index, self.dataset)
        if self.config.exclude_near:
            from clipcrawl.filters.dedup.evalset import load_eval_set

            embedder = None
            if self.config.semantic and self.clip is not None:
                from clipcrawl.filters.dedup.embed import ImageEmbedder

                embedder = ImageEmbedder(self.clip.model, self.clip.pretrained, self.clip.device)
            cache = self.index_dir if self.index_dir and "://" not in self.index_dir else None
            self._eval = Reference(load_eval_set(self.config.exclude_near, embedder, cache))

    def commit(self) -> None:
        """Persist the kept samples of this run (call after its shards are published)."""
        if getattr(self, "index", None) is not None:
            self.index.commit()

    # ---------------------------------------------------------------- process
    def _references(self) -> list[tuple[Reference, str]]:
        """(reference, where): published rows (fixed for the run), then this run's earlier batches."""
        assert self.index is not None
        if self._base is None:
            self._base = Reference(self.index.committed)
        out = [(self._base, "published")] if len(self._base) else []
        return out + [(layer, "earlier batch") for layer in self._layers]

    def close(self) -> None:
        """Stop the partitions of a partitioned index (Ray actors, threads)."""
        if hasattr(getattr(self, "index", None), "close"):
            self.index.close()

    @property
    def _partitioned(self) -> bool:
        return not isinstance(self.index, DedupIndex)

    def _remember(self, fp: Fingerprints) -> None:
        """Add kept rows as a search layer; merge equal-sized layers (amortised O(n log n) builds)."""
        if self._partitioned:  # the same layers, as sequence ranges of the partitioned index
            lo = len(self.index)
            self.index.add(fp)
            hi, model = len(self.index), fp.model if fp.emb is not None else None
            while self._ranges and self._ranges[-1][1] - self._ranges[-1][0] <= hi - lo:
                lo, _, first = self._ranges.pop()
                model = first or model
            self._ranges.append((lo, hi, model))
            return
        layer = Reference(fp)
        while self._layers and len(self._layers[-1]) <= len(layer):
            layer = Reference(Fingerprints.concat([self._layers.pop().fp, layer.fp]))
        self._layers.append(layer)
        self.index.add(fp)

    def process(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        if not cfg.enabled or table.num_rows == 0:
            return table
        if getattr(self, "index", None) is None:
            self.setup()
        active = ok_mask(table)
        if (cfg.pixels or cfg.phash) and active.any():
            table = fill_image_hashes(table, np.flatnonzero(active), thumbnails=cfg.phash)
        fp = fingerprints(table)
        if THUMB_COLUMN in table.column_names:  # transient: never written
            table = table.drop_columns([THUMB_COLUMN])
        marks = Marks(table.num_rows, active.copy())
        rank = keep_rank(table)
        if fp.emb is not None and fp.model and self.index.embedding_model and fp.model != self.index.embedding_model:
            log.warning("dedup: batch embeddings (%s) differ from the index's (%s)", fp.model,
                        self.index.embedding_model)
        if self._eval is not None:
            self._match_eval(fp, marks)
        methods = self._methods(fp)
        if self._partitioned:
            found = self._lookup(fp, marks, methods)
        else:
            refs = self._references()
        for method in methods:
            if self._partitioned:
                for apply in found[method]:
                    apply()
            else:
                for ref, where in refs:
                    self._match_reference(method, ref, where, fp, marks)
            self._group(method, fp, marks, rank)
        table = self._write(table, marks)
        kept = np.flatnonzero(ok_mask(table))
        if len(kept):
            self._remember(fp.take(kept))
        if "shard" in table.column_names:
            self.index.note_shards({s for s in table.column("shard").to_pylist() if s})
        return table

    def _lookup(self, fp: Fingerprints, marks: Marks, methods: list[str]) -> dict[str, list]:
        """Partitioned index: one scatter-gather for every method and range; returns per method the
        marking steps in the single index's order (published, then earlier batches)."""
        if self._base_range is None:  # the published rows, fixed for the run (as _base)
            self._base_range = (0, self.index.total, self.index.embedding_model)
        ranges = [(*self._base_range, "published")] if self._base_range[1] else []
        ranges += [(*r, "earlier batch") for r in self._ranges]
        out: dict[str, list] = {m: [] for m in methods}
        rows = np.flatnonzero(marks.active)
        if not len(rows) or not ranges:
            return out
        cfg = self.config
        rule, tau = self._rule(cfg.phash_max_distance), cfg.semantic_threshold

        def mark(method: str, where: str, rows: np.ndarray, f) -> None:
            hit = np.flatnonzero(f.seq >= 0)
            fmt = self._formatter(method, where)
            msgs = [fmt(k, v, s) for k, v, s in zip(f.key[hit], f.value[hit], f.score[hit])]
            self.counts[method] += marks.mark(rows[hit].tolist(), f.key[hit].tolist(), method, msgs)

        first = [m for m in methods if m != "semantic"]  # one round for exact + pHash
        found = self.index.lookup(fp.take(rows), first, [(lo, hi) for lo, hi, _, _ in ranges], rule, tau) \
            if first else {}
        for method in first:
            for (*_, where), f in zip(ranges, found[method]):
                out[method].append(lambda method=method, where=where, f=f: mark(method, where, rows, f))
        if "semantic" in methods:  # one round per range, with the rows still active then (as the single
            for lo, hi, model, where in ranges:  # index, whose embedding index is sized by them)
                if model and fp.model and model != fp.model:
                    continue  # embeddings of different models are not comparable (warned in process)

                def semantic(lo=lo, hi=hi, where=where) -> None:
                    now = np.flatnonzero(marks.active)
                    if len(now):
                        f = self.index.lookup(fp.take(now), ["semantic"], [(lo, hi)], rule, tau,
                                              max(len(now), 1024))["semantic"][0]
                        mark("semantic", where, now, f)
                out["semantic"].append(semantic)
        return out

    def _methods(self, fp: Fingerprints) -> list[str]:
        out = [m for m in ("url", "sha256", "pixels", "phash") if getattr(self.config, m)]
        if self._semantic(fp):
            out.append("semantic")
        return out

    def _semantic(self, fp: Fingerprints) -> bool:
        """Semantic dedup applies: enabled, embeddings present, and not of the tiny test model unless
        ``semantic_tiny`` (see DedupConfig.semantic_tiny)."""
        cfg = self.config
        if not cfg.semantic or fp.emb is None:
            return False
        if fp.model in TINY_ALIASES and not cfg.semantic_tiny:
            if not self._warned_tiny:
                self._warned_tiny = True
                log.info("dedup: semantic dedup skipped for embeddings of %s (a test model; to use them pass "
                         "--allow-tiny to `clipcrawl dedup`, or set dedup: {semantic_tiny: true} in a run "
                         "config)", fp.model)
            return False
        return True

    def _match_eval(self, fp: Fingerprints, marks: Marks) -> None:
        cfg, ref = self.config, self._eval
        assert ref is not None
        k = cfg.eval_phash_max_distance if cfg.eval_phash_max_distance is not None else cfg.phash_max_distance
        tau = cfg.eval_semantic_threshold or cfg.semantic_threshold
        if cfg.phash:
            hits = ref.phash(fp, marks.active, self._rule(k))
            self._apply(hits, ref, marks, DedupMethod.EVAL_SET,
                        lambda key, d, s: f"near-duplicate of evaluation image {key} ({self._perceptual_text(d, s, k)})")
        if cfg.semantic and fp.emb is not None and ref.fp.emb is not None:  # tiny model too: excluding errs safe
            hits = ref.semantic(fp, marks.active, tau)
            self._apply(hits, ref, marks, DedupMethod.EVAL_SET,
                        lambda key, v, s: f"near-duplicate of evaluation image {key} (CLIP cosine {v:.3f})")

    def _rule(self, k: int) -> Rule:
        cfg = self.config
        return Rule(k=k, crops=cfg.phash_crops, crop_k=cfg.phash_crop_distance, verify=cfg.phash_verify_threshold)

    def _perceptual_text(self, d: float, score: float, k: int) -> str:
        if np.isnan(score):
            return f"pHash distance {d:.0f} <= {k}"
        return f"pHash distance {d:.0f}, aligned thumbnail NCC {score:.3f} >= {self.config.phash_verify_threshold}"

    def _formatter(self, method: str, where: str):
        cfg = self.config
        k = cfg.phash_max_distance
        if method in _EXACT_TEXT:
            text = _EXACT_TEXT[method]
            return lambda key, v, s: f"{text} {key} ({where})"
        if method == "phash":
            return lambda key, v, s: f"{self._perceptual_text(v, s, k)} to {key} ({where})"
        return lambda key, v, s: f"CLIP cosine {v:.3f} >= {cfg.semantic_threshold} to {key} ({where})"

    def _match_reference(self, method: str, ref: Reference, where: str, fp: Fingerprints, marks: Marks) -> None:
        cfg = self.config
        if method in _EXACT_TEXT:
            hits = ref.exact(method, fp, marks.active)
        elif method == "phash":
            hits = ref.phash(fp, marks.active, self._rule(cfg.phash_max_distance))
        else:
            if ref.fp.model and fp.model and ref.fp.model != fp.model:
                return  # embeddings of different models are not comparable (warned in process)
            hits = ref.semantic(fp, marks.active, cfg.semantic_threshold)
        self._apply(hits, ref, marks, DedupMethod(method), self._formatter(method, where))

    def _apply(self, hits: Hits, ref: Reference, marks: Marks, method: DedupMethod, fmt) -> None:
        rows = np.flatnonzero(hits.ref >= 0)
        keys = [ref.fp.key[j] for j in hits.ref[rows]]
        score = hits.score if hits.score is not None else np.full(len(hits.ref), np.nan)
        msgs = [fmt(k, v, s) for k, v, s in zip(keys, hits.value[rows], score[rows])]
        self.counts[method.value] += marks.mark(rows.tolist(), keys, method.value, msgs)

    def _group(self, method: str, fp: Fingerprints, marks: Marks, rank: np.ndarray) -> None:
        cfg = self.config
        if method in _EXACT_TEXT:
            groups = group_exact(fp, method, marks.active, rank)
            text = _EXACT_TEXT[method] + " {}"
        elif method == "phash":
            groups = group_phash(fp, marks.active, rank, self._rule(cfg.phash_max_distance))
            text = "{2} to {0}"
        else:
            groups = group_semantic(fp, marks.active, rank, cfg.semantic_threshold)
            text = f"CLIP cosine {{1:.3f}} >= {cfg.semantic_threshold} to {{0}}"
        rows = np.flatnonzero(groups.leaders.leader >= 0)
        keys = [fp.key[j] for j in groups.leaders.leader[rows]]
        score = groups.score if groups.score is not None else np.full(len(fp), np.nan)
        msgs = [text.format(k, v, self._perceptual_text(v, s, cfg.phash_max_distance) if method == "phash" else "")
                for k, v, s in zip(keys, groups.value[rows], score[rows])]
        self.counts[method] += marks.mark(rows.tolist(), keys, method, msgs)

    def _write(self, table: pa.Table, marks: Marks) -> pa.Table:
        marked = marks.marked
        table = mark(table, marked, Status.DUPLICATE, self.name, marks.message)
        for col, values in (("duplicate_of", marks.duplicate_of), ("dedup_method", marks.method)):
            old = table.column(col).to_pylist() if col in table.column_names else [None] * table.num_rows
            new = [v if m else o for v, o, m in zip(values, old, marked)]
            table = set_column(table, col, pa.array(new, pa.string()))
        return table
