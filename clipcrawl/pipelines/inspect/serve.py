"""``clipcrawl serve DIR...``: clip-retrieval back's HTTP API over clipcrawl datasets.

The same endpoints and JSON shapes as ``clip-retrieval back`` (clip_retrieval/clip_back.py), so
``clip_retrieval.clip_client.ClipClient`` and clip-retrieval's web front end work unchanged::

    GET  /indices-list   ["name", ...]                     one index per dataset (its folder name)
    POST /knn-service    {"text"|"image" (base64)|"image_url"|"embedding_input", "modality": "image",
                          "indice_name", "num_images", "num_result_ids", "deduplicate",
                          "use_safety_model", "use_violence_detector", "aesthetic_score",
                          "aesthetic_weight", "filters" (ours)}
                         -> [{<metadata columns>, "id": int, "similarity": float}, ...] best first;
                            rows past num_images carry only id and similarity (as clip_back does)
    POST /metadata       {"ids": [...], "indice_name"} -> [{"id": id, "metadata": {...}}, ...]

Semantics, following clip_back:

* ``text`` and ``image`` are embedded with the dataset's own CLIP model (the one that scored it, see
  :mod:`.recorded`), L2-normalised; ``embedding_input`` is used as given. ``modality`` must be
  ``image`` (clipcrawl indexes the image embeddings; a text index does not exist: 400).
* ``deduplicate``: clip_back's connected-components dedup: the results' vectors (reconstructed from
  the index) are linked when their cosine is >= 0.94, and only the best-ranked member of each group
  is kept, so fewer than ``num_result_ids`` may come back.
* ``use_safety_model`` / ``use_violence_detector``: clip_back runs its NSFW / violence classifiers;
  here both map to the dataset's ``punsafe`` column (clipcrawl's zero-shot unsafe score, whose positive
  prompts include graphic violence, or the trained safety head's): rows with ``punsafe > 0.5`` are left
  out (rows without a score are kept, as clip_back keeps everything when it has no model). Unlike
  clip_back it is a filter before the cut, so ``num_result_ids`` rows still come back.
* ``aesthetic_score`` / ``aesthetic_weight`` (sent by ClipClient on every call): used only when the
  dataset records an ``aesthetic`` / ``aesthetic_score`` column: candidates are re-ranked by
  ``similarity - weight * |aesthetic - score| / 10``; ignored otherwise.
* ``filters`` (ours; clients that do not send it are unaffected): ``{column: value | [values] |
  {"min": x, "max": y, "prefix": "en"}}`` over any column the dataset records: the index metadata's
  (``clip_similarity``, ``punsafe``, ``pwatermark``, ``width``...) or the shard Parquets'
  (``page_language``, a licence column, ``ai_generated``...). The search widens until enough rows pass
  (up to :data:`MAX_CANDIDATES` candidates, and what an IVF index's ``nprobe`` cells hold: a filter
  that passes very few rows can return fewer than asked).

Results follow the dataset's current statuses: ids whose row is not ``success`` now (a re-cut, dedup
or curate after ``clipcrawl index``) are never returned, and ``/metadata`` answers ``{}`` for them.
The server re-checks the shard Parquets and ``index/index.json`` at most every
:data:`REFRESH_SECONDS` (one listing) and reopens what changed.

Larger than memory: ``index/image.index`` is opened memory-mapped when local (faiss ``IO_FLAG_MMAP``
/ ``IO_FLAG_MMAP_IFC``: an IVF-SQ / IVF-PQ index's inverted lists, a flat index's codes and the fp16
re-ranking copies of ``clipcrawl index``'s ``IVF,PQ..x4fs,Refine(SQfp16)`` stay on disk, whose 4-bit
fast-scan lists, 32 bytes a vector, are read into memory; the pages the queries touch come in as page
cache and can be evicted) and metadata is read by id from ``index/metadata/metadata_N.parquet``: the
row group holding the id, a small LRU of decoded row groups, nothing loaded whole. Without an index
the embeddings are searched exactly in memory (small datasets).

Safe by default: 127.0.0.1; requests whose ``Host`` is not the listening address are refused (DNS
rebinding); request bodies are bounded (:data:`MAX_BODY`), ``num_images`` / ``num_result_ids`` /
``ids`` by :data:`MAX_K`; a malformed request is a 400 with the reason in ``{"error": ...}``;
``image_url`` is answered with the stored vector when it is the URL of a sample of the dataset (the
front end's "search by this image"), and any other URL is refused unless ``allow_image_url`` (the
server would fetch it for the client); CORS
headers only for the origins given (``cors``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import math
import os
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.progress import log
from clipcrawl.base.storage import fs_and_path, is_local, read_parquet
from clipcrawl.pipelines.inspect.index import (
    INDEX_FILE,
    K_FACTOR,
    STATE_FILE,
    IndexUnavailable,
    embedding_parts,
    index_dir,
    kept_keys,
    kept_mask,
    load_vectors,
    read_index,
    read_state,
    set_search_params,
    shard_fingerprints,
)
from clipcrawl.pipelines.inspect.search import Searcher

MAX_K = 10_000  # num_images, num_result_ids, ids of one /metadata call
MAX_BODY = 16 * 1024 * 1024  # a base64 image of ~12 MB
MAX_IMAGE_URL_BYTES = 16 * 1024 * 1024
DEDUP_THRESHOLD = 0.94  # clip_back's get_non_uniques
UNSAFE_THRESHOLD = 0.5  # clip_back's get_unsafe_items
REFRESH_SECONDS = 5.0
MAX_CANDIDATES = 200_000  # widening for filters stops here: a filter passing very few rows may return fewer
ROW_GROUP_CACHE = 256
AESTHETIC_COLUMNS = ("aesthetic", "aesthetic_score")
SKIP_COLUMNS = ("shard",)  # bookkeeping, not shown


class BadRequest(ValueError):
    """A request the API refuses (HTTP 400, the message is the reason)."""


def _py(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


# ------------------------------------------------------------------ metadata by id
@dataclass(frozen=True)
class _File:
    start: int
    rows: int
    url: str


class ParquetRows:
    """Rows by global id over Parquet files laid end to end (``files``: start, rows, url), read one
    row group at a time (only the footers are kept; decoded row groups in a small LRU)."""

    def __init__(self, files: Sequence[tuple[int, int, str]]) -> None:
        import pyarrow.parquet as pq

        self.files = [_File(*f) for f in files if f[1] > 0]
        self.starts = np.array([f.start for f in self.files], dtype=np.int64)
        self._meta: list[Any] = []
        self._rg_starts: list[np.ndarray] = []
        self._names: list[set[str]] = []
        names: list[str] = []
        for f in self.files:
            fs, p = fs_and_path(f.url)
            with fs.open(p, "rb") as fh:
                md = pq.ParquetFile(fh).metadata
            if md.num_rows != f.rows:
                raise IndexUnavailable(f"{f.url}: {md.num_rows} rows, the index says {f.rows}")
            self._meta.append(md)
            self._rg_starts.append(np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)]))
            self._names.append(set(md.schema.to_arrow_schema().names))
            for n in md.schema.to_arrow_schema().names:
                if n not in names:
                    names.append(n)
        self.columns = names
        self._cache: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.files[-1].start + self.files[-1].rows) if self.files else 0

    def _open_file(self, fi: int) -> tuple[Any, Any]:
        """(ParquetFile with the kept footer, handle to close or None); memory-mapped when local."""
        import pyarrow.parquet as pq

        fs, p = fs_and_path(self.files[fi].url)
        if is_local(fs):
            return pq.ParquetFile(p, metadata=self._meta[fi], memory_map=True), None
        fh = fs.open(p, "rb")
        return pq.ParquetFile(fh, metadata=self._meta[fi]), fh

    def get(self, ids: Sequence[int], columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The rows of ``ids`` (their ``columns``, all by default), in order: each file opened once, the
        row groups holding the ids read (only those columns), recent row groups kept in an LRU."""
        ids = np.asarray(ids, dtype=np.int64)
        out: list[dict[str, Any]] = [{} for _ in range(len(ids))]
        if not len(ids):
            return out
        fis = np.searchsorted(self.starts, ids, side="right") - 1
        where: dict[int, dict[int, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
        for j, (i, fi) in enumerate(zip(ids.tolist(), fis.tolist())):
            local = i - self.files[fi].start
            rg = int(np.searchsorted(self._rg_starts[fi], local, side="right")) - 1
            where[fi][rg].append((j, local - int(self._rg_starts[fi][rg])))
        want = tuple(c for c in (columns or self.columns) if c in self.columns)
        for fi, groups in where.items():
            cols = tuple(c for c in want if c in self._names[fi])
            pf, fh = None, None
            try:
                for rg, rows in groups.items():
                    key = (fi, rg, cols)
                    with self._lock:
                        t = self._cache.get(key)
                        if t is not None:
                            self._cache.move_to_end(key)
                    if t is None:
                        if pf is None:
                            pf, fh = self._open_file(fi)
                        t = pf.read_row_group(rg, list(cols))
                        with self._lock:
                            self._cache[key] = t
                            while len(self._cache) > ROW_GROUP_CACHE:
                                self._cache.popitem(last=False)
                    sub = t.take(pa.array([r for _, r in rows])).to_pylist()
                    for (j, _), row in zip(rows, sub):
                        out[j] = {k: _py(v) for k, v in row.items()}
            finally:
                if fh is not None:
                    fh.close()
        return out

    def column(self, name: str) -> pa.ChunkedArray:
        """One column over every id (read alone from each file)."""
        chunks = []
        for f in self.files:
            t = read_parquet(f.url, [name]) if name in self.columns else None
            chunks.append(t.column(name) if t is not None and name in t.column_names
                          else pa.chunked_array([pa.nulls(f.rows)]))
        return pa.chunked_array([c for ch in chunks for c in ch.chunks]) if chunks else pa.chunked_array([], pa.null())


# ------------------------------------------------------------------ one served dataset
def open_index(url: str) -> Any:
    """``image.index``: memory-mapped when local (lists and flat codes stay on disk), else read whole."""
    import faiss

    fs, p = fs_and_path(url)
    if is_local(fs):
        for flags in (faiss.IO_FLAG_MMAP | faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY,
                      faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY):
            try:
                return faiss.read_index(p, flags)
            except RuntimeError as e:  # an index type that cannot be mapped: the next way
                log.debug("serve: %s cannot be mapped with flags %x: %s", p, flags, e)
        return faiss.read_index(p)
    return read_index(url.rsplit("/", 1)[0])


class ServedIndex(Searcher):
    """One dataset behind the API: its index (mapped), metadata by id, current statuses, model."""

    def __init__(self, dataset: str | os.PathLike[str], name: str | None = None, model: str | None = None,
                 pretrained: str | None = None, device: str = "auto", nprobe: int | None = None,
                 success_keys: pa.Array | None = None) -> None:
        self.dataset = os.fspath(dataset).rstrip("/")
        self.name = name or self.dataset.rsplit("/", 1)[-1]
        self._model_args = (model, pretrained, device)
        self._clip: Any = None
        self._encoder: Any = None
        self._nprobe = nprobe
        self._embed_lock = threading.Lock()
        self._columns: dict[str, np.ndarray | pa.Array] = {}
        self._col_lock = threading.Lock()
        self._keys: pa.Array | None = None
        self._checked = time.monotonic()
        self._open(success_keys)

    # -------------------------------------------------------------- opening and refreshing
    def _signature(self) -> tuple[Any, ...]:
        fs, p = fs_and_path(f"{index_dir(self.dataset)}/{STATE_FILE}")
        try:
            st = fs.info(p)
            idx = (st.get("mtime"), st.get("size"))
        except FileNotFoundError:
            idx = None
        return idx, tuple(shard_fingerprints(self.dataset).items())

    def _open(self, success_keys: pa.Array | None = None) -> None:
        from clipcrawl.pipelines.lock import hold_dataset

        with hold_dataset(self.dataset, shared=True):  # never next to a pass rewriting rows or the index
            sig = self._signature()
            folder = index_dir(self.dataset)
            state = read_state(folder)
            index = None
            if state is not None:
                index = open_index(f"{folder}/{INDEX_FILE}")
                if int(index.ntotal) != state["ntotal"]:
                    log.warning("serve: %s is incomplete (an interrupted write?); searching the embeddings "
                                "exactly (rerun clipcrawl index)", folder)
                    index = state = None
            if index is not None and state is not None:
                set_search_params(index, self._nprobe or state.get("nprobe"), state.get("k_factor", K_FACTOR))
                rows = ParquetRows([(p["start"], p["rows"], f"{folder}/metadata/metadata_{p['part']}.parquet")
                                    for p in state["parts"]])
            else:
                index, rows = self._exact()
            self.index, self.state, self.rows = index, state, rows
            self.kind = state["kind"] if state is not None else "exact (no index)"
            self.dim = int(index.d)
            self._columns, self._keys = {}, None
            self.live = self._live_mask(success_keys, sig[1])
            self._sig = sig

    def _exact(self) -> tuple[Any, ParquetRows]:
        import faiss

        fs, p = fs_and_path(self.dataset)
        if not fs.isdir(p):
            raise IndexUnavailable(f"{self.dataset}: no such dataset folder")
        efs, ep = fs_and_path(DatasetLayout.of(self.dataset).embeddings)
        if not efs.isdir(ep):
            raise IndexUnavailable(f"{self.dataset}: no index/ and no embeddings/ to serve (score with "
                                   "--save-embeddings, then clipcrawl index)")
        parts, d = embedding_parts(self.dataset)
        log.info("serve: no index in %s; exact search over %d embedding parts in memory (clipcrawl index "
                 "builds one)", index_dir(self.dataset), len(parts))
        index = faiss.IndexFlatIP(d)
        for p in parts:
            index.add(load_vectors(p.img))
        starts = np.cumsum([0] + [p.rows for p in parts])[:-1]
        return index, ParquetRows([(int(s), p.rows, p.meta) for s, p in zip(starts, parts)])

    def _live_mask(self, success_keys: pa.Array | None, shards: tuple[tuple[str, str], ...]) -> np.ndarray | None:
        if self.state is not None and self.state.get("shards") is not None and self.state["shards"] == dict(shards):
            return None  # the statuses the index was built from are the shards' statuses now
        if success_keys is None:
            success_keys, _ = kept_keys(self.dataset)
            if success_keys is None:
                return None  # no shards: nothing says which rows are kept
        if "key" not in self.rows.columns:
            return None
        live = kept_mask(self.keys(), success_keys.cast(pa.string()))
        if live.all():
            return None
        log.warning("serve: %s: %d of %d vectors are of samples that are not success now; they are left out",
                    self.name, int((~live).sum()), len(live))
        return live

    def stale(self) -> bool:
        """Whether the index or the shard statuses changed on disk (checked at most every REFRESH_SECONDS)."""
        now = time.monotonic()
        if now - self._checked < REFRESH_SECONDS:
            return False
        self._checked = now
        try:
            return self._signature() != self._sig
        except Exception as e:  # noqa: BLE001 - keep serving what is open
            log.warning("serve: %s: cannot check for changes (%s: %s)", self.name, type(e).__name__, e)
            return False

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # -------------------------------------------------------------- columns (filters, safety)
    def keys(self) -> pa.Array:
        if self._keys is None:
            self._keys = self.rows.column("key").combine_chunks().cast(pa.string())
        return self._keys

    @functools.cached_property
    def shard_columns(self) -> list[str]:
        import pyarrow.parquet as pq

        from clipcrawl.base.shardfiles import list_shards

        refs = list_shards(DatasetLayout.of(self.dataset).shards)
        if not refs:
            return []
        fs, p = fs_and_path(refs[0].parquet)
        with fs.open(p, "rb") as f:
            return list(pq.ParquetFile(f).schema_arrow.names)

    def columns(self) -> list[str]:
        return [*self.rows.columns, *[c for c in self.shard_columns if c not in self.rows.columns]]

    def column(self, name: str) -> pa.Array:
        """Column ``name`` aligned with the ids: from the index metadata, else joined by key from the shards."""
        with self._col_lock:
            got = self._columns.get(name)
            if got is not None:
                return got
            if name in self.rows.columns:
                arr = self.rows.column(name).combine_chunks()
            elif name in self.shard_columns:
                from clipcrawl.base.shardfiles import list_shards

                tables = [read_parquet(r.parquet, ["key", "status", name])
                          for r in list_shards(DatasetLayout.of(self.dataset).shards)]
                t = pa.concat_tables(tables, promote_options="default")
                ok = pc.fill_null(pc.equal(t.column("status"), "success"), False)
                t = t.filter(ok)  # a key's success row (a dropped duplicate row may share it)
                pos = pc.index_in(self.keys(), value_set=t.column("key").combine_chunks().cast(pa.string()))
                arr = t.column(name).combine_chunks().take(pos)
            else:
                raise BadRequest(f"no column {name!r}; recorded columns: {', '.join(self.columns())}")
            self._columns[name] = arr
            return arr

    def _numeric(self, name: str) -> np.ndarray:
        arr = self.column(name)
        if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)):
            raise BadRequest(f"column {name!r} is {arr.type}, not a number")
        return pc.fill_null(arr.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)

    def filter_mask(self, filters: dict[str, Any]) -> np.ndarray | None:
        """Bool mask over ids of the rows that pass ``filters`` (see the module docstring)."""
        if not filters:
            return None
        m = np.ones(len(self), dtype=bool)
        for col, spec in filters.items():
            if not isinstance(col, str):
                raise BadRequest("filters: column names must be strings")
            if isinstance(spec, dict):
                unknown = set(spec) - {"min", "max", "prefix"}
                if unknown:
                    raise BadRequest(f"filters.{col}: unknown operator(s) {sorted(unknown)}; use min, max, prefix")
                for op, fn in (("min", np.greater_equal), ("max", np.less_equal)):
                    if op in spec:
                        v = spec[op]
                        if isinstance(v, bool) or not isinstance(v, (int, float)):
                            raise BadRequest(f"filters.{col}.{op} must be a number")
                        with np.errstate(invalid="ignore"):
                            m &= fn(self._numeric(col), float(v))
                if "prefix" in spec:
                    if not isinstance(spec["prefix"], str):
                        raise BadRequest(f"filters.{col}.prefix must be a string")
                    low = pc.utf8_lower(self.column(col).cast(pa.string()))
                    m &= pc.fill_null(pc.starts_with(low, spec["prefix"].lower()), False).to_numpy(
                        zero_copy_only=False)
                continue
            values = spec if isinstance(spec, list) else [spec]
            if not values or any(isinstance(v, (dict, list)) for v in values):
                raise BadRequest(f"filters.{col}: a value, a list of values or {{min, max, prefix}}")
            arr = self.column(col)
            try:
                got = pc.is_in(arr, value_set=pa.array(values).cast(arr.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise BadRequest(f"filters.{col}: {values!r} do not match the column's type {arr.type}: {e}") from None
            m &= pc.fill_null(got, False).to_numpy(zero_copy_only=False)
        return m

    # -------------------------------------------------------------- the query
    def embed(self, text: str | None = None, image: bytes | None = None) -> np.ndarray:
        with self._embed_lock:  # one model, requests on executor threads
            return self.embed_image(image) if image is not None else self.embed_text(text or "")

    def knn(self, query: np.ndarray, num_result_ids: int, deduplicate: bool = False, safe: bool = False,
            filters: dict[str, Any] | None = None, aesthetic: tuple[float, float] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), best first: up to ``num_result_ids`` rows that are success now, pass
        ``filters`` and the safety flag; then clip_back's dedup."""
        n, k = len(self), num_result_ids
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            raise BadRequest(f"the query has {q.shape[1]} dimensions, the index {self.dim}")
        masks = [m for m in (self.live, self.filter_mask(filters or {})) if m is not None]
        if safe and "punsafe" in self.columns():
            with np.errstate(invalid="ignore"):
                masks.append(~(self._numeric("punsafe") > UNSAFE_THRESHOLD))
        keep = functools.reduce(np.logical_and, masks) if masks else None
        passing = n if keep is None else int(keep.sum())
        if n == 0 or passing == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        over = max(1, round(n / passing))
        kk = min(n, MAX_CANDIDATES, k if keep is None else 8 * k * over)
        while True:  # ids only: the vectors (dedup) are fetched for the final rows alone
            sims, ids = self.index.search(q, kk)
            sims, ids = sims[0], ids[0]
            valid = ids >= 0
            found = int(valid.sum())
            if keep is not None:
                valid &= keep[np.maximum(ids, 0)]
            # enough; or the index has no more (an IVF index returns what its nprobe cells hold); or the cap
            if int(valid.sum()) >= k or kk >= min(n, MAX_CANDIDATES) or found < kk:
                break
            kk = min(n, MAX_CANDIDATES, kk * 4)
        rank = np.flatnonzero(valid)  # positions in the unfiltered list
        sims, ids = sims[valid], ids[valid]
        if aesthetic is not None:
            col = next((c for c in AESTHETIC_COLUMNS if c in self.columns()), None)
            if col is not None:
                score, weight = aesthetic
                aes = self._numeric(col)[ids]
                order = np.argsort(-(sims - weight * np.nan_to_num(np.abs(aes - score), nan=10.0) / 10),
                                   kind="stable")
                sims, ids, rank = sims[order], ids[order], rank[order]
        sims, ids, rank = sims[:k], ids[:k], rank[:k]
        if deduplicate and len(ids) > 1:
            drop = non_uniques(self._vectors(q, ids, rank))
            if drop:
                mask = np.ones(len(ids), dtype=bool)
                mask[list(drop)] = False
                sims, ids = sims[mask], ids[mask]
        return sims, ids

    def _vectors(self, q: np.ndarray, ids: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """The index's (reconstructed) vectors of ``ids``, which are at positions ``rank`` of the unfiltered
        result list of ``q``: by id where the index can (flat, refine), else as clip_back gets them, with
        ``search_and_reconstruct`` (an IVF index mapped read-only has no id -> list map)."""
        try:
            return self.index.reconstruct_batch(ids.astype(np.int64))
        except RuntimeError:
            pass
        _, _, vecs = self.index.search_and_reconstruct(q, int(rank.max()) + 1)
        return vecs[0][rank]

    def vector_of_url(self, url: str) -> np.ndarray | None:
        """The stored image embedding of the sample (success now) whose ``url`` this is, or None: the front
        end's "search by this image" sends a result's URL, answered without fetching anything."""
        urls = self.column("url") if "url" in self.columns() else None
        if urls is None:
            return None
        hits = np.flatnonzero(pc.fill_null(pc.equal(urls, url), False).to_numpy(zero_copy_only=False))
        hits = [int(i) for i in hits if self.live is None or self.live[i]]
        if not hits:
            return None
        i = hits[0]
        try:
            return self.index.reconstruct(i)[None, :]
        except RuntimeError:  # an IVF index without a direct map: the vector from the embeddings folder
            pass
        key = self.rows.get([i], ["key"])[0].get("key")
        part = next((p["part"] for p in (self.state or {}).get("parts", [])
                     if p["start"] <= i < p["start"] + p["rows"]), None)
        if key is None or part is None:
            return None
        emb = DatasetLayout.of(self.dataset).embeddings
        keys = read_parquet(f"{emb}/metadata/metadata_{part}.parquet", ["key"]).column("key").to_pylist()
        if key not in keys:
            return None
        return load_vectors(f"{emb}/img_emb/img_emb_{part}.npy")[keys.index(key)][None, :]

    def metadata(self, ids: Sequence[int], columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Metadata rows of ``ids``; ``{}`` for an id whose row is not success now."""
        ids = list(ids)
        ok = [i for i in ids if self.live is None or self.live[i]]
        got = dict(zip(ok, self.rows.get(ok, columns or [c for c in self.rows.columns if c not in SKIP_COLUMNS])))
        return [got.get(i, {}) for i in ids]


def non_uniques(embeddings: np.ndarray, threshold: float = DEDUP_THRESHOLD) -> set[int]:
    """clip_back's ``get_non_uniques``: link results whose cosine is >= ``threshold``; keep the best-ranked
    (lowest position) member of each connected group, return the positions of the others."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1
    x = x / norms  # clip_back normalises the reconstructed vectors
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, _, nbrs = index.range_search(x, threshold)
    seen: set[int] = set()
    drop: set[int] = set()
    for start in range(len(x)):
        if start in seen:
            continue
        stack = [start]
        seen.add(start)
        while stack:
            node = stack.pop()
            for j in nbrs[lims[node]:lims[node + 1]].tolist():
                if j not in seen:
                    seen.add(j)
                    drop.add(j)
                    stack.append(j)
    return drop


# ------------------------------------------------------------------ request parsing
def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise BadRequest(f"{name} must be true or false")
    return v


def _count(body: dict[str, Any], name: str, default: int | None = None) -> int:
    v = body.get(name, default)
    if v is None and default is None:
        raise BadRequest(f"{name} is required")
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"{name} must be an integer")
    if not 1 <= v <= MAX_K:
        raise BadRequest(f"{name} must be between 1 and {MAX_K}")
    return v


def _optional_number(body: dict[str, Any], name: str) -> float | None:
    v = body.get(name, "")
    if v in ("", None):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number") from None
    if not math.isfinite(f):
        raise BadRequest(f"{name} must be finite")
    return f


@dataclass
class KnnRequest:
    indice_name: str
    text: str | None
    image: bytes | None
    image_url: str | None
    embedding: np.ndarray | None
    num_images: int
    num_result_ids: int
    deduplicate: bool
    safe: bool
    aesthetic: tuple[float, float] | None
    filters: dict[str, Any]


def parse_knn(body: Any, names: Sequence[str]) -> KnnRequest:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    name = body.get("indice_name")
    if name is None:
        name = names[0]
    if name not in names:
        raise BadRequest(f"unknown indice_name {name!r}; served: {', '.join(names)}")
    modality = body.get("modality", "image")
    if modality != "image":
        raise BadRequest(f"modality {modality!r}: only 'image' is served (clipcrawl indexes image embeddings)")
    if body.get("use_mclip"):
        raise BadRequest("use_mclip: multilingual CLIP is not served; the dataset's own model embeds text")
    text, image, image_url, emb = (body.get(k) for k in ("text", "image", "image_url", "embedding_input"))
    req = KnnRequest(name, None, None, None, None, 0, 0, False, False, None, {})
    if text not in (None, ""):  # clip_back's order: text, then image / image_url, then embedding_input
        if not isinstance(text, str) or len(text) > 10_000:
            raise BadRequest("text must be a string (at most 10,000 characters)")
        req.text = text
    elif image is not None:
        if not isinstance(image, str):
            raise BadRequest("image must be a base64 string")
        try:
            req.image = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("image is not valid base64") from None
    elif image_url is not None:
        if not isinstance(image_url, str) or not image_url.startswith(("http://", "https://")):
            raise BadRequest("image_url must be an http(s) URL")
        req.image_url = image_url
    elif emb is not None:
        if not isinstance(emb, list) or not emb or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in emb):
            raise BadRequest("embedding_input must be a list of numbers")
        vec = np.asarray(emb, dtype=np.float32)
        if not np.isfinite(vec).all():
            raise BadRequest("embedding_input must be finite")
        req.embedding = vec[None, :]
    else:
        raise BadRequest("must fill one of text, image, image_url and embedding_input")
    req.num_images = _count(body, "num_images", None)
    req.num_result_ids = _count(body, "num_result_ids", req.num_images)
    req.deduplicate = _bool(body, "deduplicate", False)
    req.safe = _bool(body, "use_safety_model", False) or _bool(body, "use_violence_detector", False)
    score, weight = _optional_number(body, "aesthetic_score"), _optional_number(body, "aesthetic_weight")
    if score is not None and weight:
        req.aesthetic = (score, weight)
    filters = body.get("filters") or {}
    if not isinstance(filters, dict):
        raise BadRequest("filters must be an object {column: value | [values] | {min, max, prefix}}")
    req.filters = filters
    return req


# ------------------------------------------------------------------ the web app
class Indices:
    """The served datasets by name; each opened on first use (``opener(name)``) or given."""

    def __init__(self, openers: dict[str, Callable[[], ServedIndex]]) -> None:
        self.openers = openers
        self._open: dict[str, ServedIndex] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.openers)

    def get(self, name: str) -> ServedIndex:
        with self._lock:
            if name not in self._open:
                self._open[name] = self.openers[name]()
            got = self._open[name]
        if got.stale():  # reopened whole, then swapped: a query in flight keeps the one it has
            log.info("serve: %s changed on disk (index or statuses); reopening", name)
            try:
                new = self.openers[name]()
            except Exception as e:  # noqa: BLE001 - keep serving what is open
                log.warning("serve: %s: could not reopen (%s: %s); serving the previous state", name,
                            type(e).__name__, e)
                return got
            new._clip, new._encoder = got._clip, got._encoder  # the same model: not loaded again
            with self._lock:
                self._open[name] = got = new
        return got


def fetch_image_url(url: str, timeout: float = 10.0) -> bytes:
    """An image_url query's bytes (only with allow_image_url), bounded in size and time."""
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "clipcrawl-serve"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - http(s) checked in parse_knn
        data = r.read(MAX_IMAGE_URL_BYTES + 1)
    if len(data) > MAX_IMAGE_URL_BYTES:
        raise BadRequest(f"image_url: the image is larger than {MAX_IMAGE_URL_BYTES} bytes")
    return data


def knn_query(indices: Indices, body: Any, allow_image_url: bool = False) -> list[dict[str, Any]]:
    """One ``/knn-service`` call (blocking: run it on an executor thread)."""
    req = parse_knn(body, indices.names)
    s = indices.get(req.indice_name)
    if req.image_url is not None:  # a sample's own URL (the front end's "similar"): its stored vector
        req.embedding = s.vector_of_url(req.image_url)
        if req.embedding is None and not allow_image_url:
            raise BadRequest("image_url: not the URL of a sample of this dataset, and this server does not "
                             "fetch URLs (start serve with --allow-image-url); send the image as base64 in 'image'")
    if req.embedding is not None:
        query = req.embedding
    else:
        image = req.image
        if req.image_url is not None:
            image = fetch_image_url(req.image_url)
        try:
            query = s.embed(text=req.text, image=image)
        except (OSError, ValueError) as e:  # PIL cannot decode the image
            if isinstance(e, IndexUnavailable):
                raise
            raise BadRequest(f"image: cannot decode it ({type(e).__name__}: {e})") from None
    sims, ids = s.knn(query, req.num_result_ids, deduplicate=req.deduplicate, safe=req.safe,
                      filters=req.filters, aesthetic=req.aesthetic)
    metas = s.metadata(ids[:req.num_images].tolist())
    out = []
    for j, (d, i) in enumerate(zip(sims.tolist(), ids.tolist())):
        row = dict(metas[j]) if j < len(metas) else {}
        row["id"] = int(i)
        row["similarity"] = float(d)
        out.append(row)
    return out


def metadata_query(indices: Indices, body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    ids = body.get("ids")
    if not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise BadRequest("ids must be a list of integers")
    if len(ids) > MAX_K:
        raise BadRequest(f"at most {MAX_K} ids a call")
    if not ids:
        return []
    name = body.get("indice_name")
    if name is None:
        name = indices.names[0]
    if name not in indices.names:
        raise BadRequest(f"unknown indice_name {name!r}; served: {', '.join(indices.names)}")
    s = indices.get(name)
    bad = [i for i in ids if not 0 <= i < len(s)]
    if bad:
        raise BadRequest(f"ids out of range 0..{len(s) - 1}: {bad[:5]}")
    return [{"id": i, "metadata": m} for i, m in zip(ids, s.metadata(ids))]


def allowed_hosts_for(host: str) -> set[str] | None:
    return None if host in ("0.0.0.0", "::") else {host, "localhost", "127.0.0.1", "::1"}


def add_api(app: Any, indices: Indices, cors: Sequence[str] = (), allow_image_url: bool = False) -> None:
    """Mount ``/indices-list``, ``/knn-service`` and ``/metadata`` (and their CORS preflights) on ``app``."""
    from aiohttp import web

    origins = set(cors)

    def cors_headers(request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            return {"Access-Control-Allow-Origin": "*" if "*" in origins else origin, "Vary": "Origin",
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"}
        return {}

    def jsonr(request: web.Request, obj: Any, status: int = 200) -> web.Response:
        return web.Response(text=json.dumps(obj, ensure_ascii=False, default=str), status=status,
                            content_type="application/json", headers=cors_headers(request))

    async def run(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))

    async def body_of(request: web.Request) -> Any:
        try:
            raw = await request.read()  # ClipClient sends JSON without a Content-Type (clip_back forces it)
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(f"the request body is larger than {MAX_BODY} bytes") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not JSON: {e}") from None

    def handler(fn: Callable[..., Any]) -> Callable[[web.Request], Any]:
        async def h(request: web.Request) -> web.Response:
            try:
                return jsonr(request, await fn(request))
            except BadRequest as e:
                return jsonr(request, {"error": str(e)}, 400)
            except IndexUnavailable as e:
                return jsonr(request, {"error": str(e)}, 503)
            except Exception as e:  # noqa: BLE001 - answered and logged; the server keeps serving
                log.warning("serve: %s failed: %s: %s", request.path, type(e).__name__, e)
                return jsonr(request, {"error": f"{type(e).__name__}: {e}"}, 500)
        return h

    async def indices_list(request: web.Request) -> Any:
        return indices.names

    async def knn(request: web.Request) -> Any:
        return await run(knn_query, indices, await body_of(request), allow_image_url)

    async def metadata(request: web.Request) -> Any:
        return await run(metadata_query, indices, await body_of(request))

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(status=204 if cors_headers(request) else 403, headers=cors_headers(request))

    app.router.add_get("/indices-list", handler(indices_list))
    app.router.add_post("/knn-service", handler(knn))
    app.router.add_post("/metadata", handler(metadata))
    for path in ("/indices-list", "/knn-service", "/metadata"):
        app.router.add_route("OPTIONS", path, preflight)


def make_app(indices: Indices, allowed_hosts: set[str] | None, cors: Sequence[str] = (),
             allow_image_url: bool = False) -> Any:
    from aiohttp import web

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if allowed_hosts is not None and request.host.rsplit(":", 1)[0].strip("[]") not in allowed_hosts:
            raise web.HTTPForbidden(text="unexpected Host header")
        resp = await handler(request)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app.router.add_get("/health", health)  # clip_back's
    add_api(app, indices, cors, allow_image_url)
    return app


def dataset_names(datasets: Sequence[str]) -> dict[str, str]:
    """``{index name: dataset}``: each dataset's folder name, made unique with -2, -3..."""
    out: dict[str, str] = {}
    for d in datasets:
        base = os.fspath(d).rstrip("/").rsplit("/", 1)[-1] or "dataset"
        name, i = base, 2
        while name in out:
            name, i = f"{base}-{i}", i + 1
        out[name] = os.fspath(d)
    return out


class ServeServer:
    """``with ServeServer([dataset, ...]) as srv: srv.url`` — the API served from a thread; every dataset
    is opened before it answers (a bad one fails here, not on the first query)."""

    def __init__(self, datasets: Sequence[str], host: str = "127.0.0.1", port: int = 0, cors: Sequence[str] = (),
                 allow_image_url: bool = False, nprobe: int | None = None, model: str | None = None,
                 pretrained: str | None = None, device: str = "auto", warm: bool = False) -> None:
        names = dataset_names(datasets)
        self.indices = Indices({n: functools.partial(ServedIndex, d, n, model, pretrained, device, nprobe)
                                for n, d in names.items()})
        self.host, self.port, self.url = host, port, ""
        self.cors, self.allow_image_url, self.warm = tuple(cors), allow_image_url, warm
        self._site: Any = None

    def __enter__(self) -> ServeServer:
        from clipcrawl.base.websrv import ThreadedSite

        for n in self.indices.names:
            s = self.indices.get(n)
            if self.warm:
                try:
                    s.embed(text="warm up")
                except Exception as e:  # noqa: BLE001 - embedding_input queries still work
                    log.info("serve: %s: text/image queries unavailable: %s", n, e)
        self._site = ThreadedSite(lambda: make_app(self.indices, allowed_hosts_for(self.host), self.cors,
                                                   self.allow_image_url), self.host, self.port, "serve").start()
        self.port, self.url = self._site.port, self._site.url
        return self

    def __exit__(self, *exc: object) -> None:
        if self._site is not None:
            self._site.stop()
            self._site = None
