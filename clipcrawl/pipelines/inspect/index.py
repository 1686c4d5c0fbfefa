"""``clipcrawl index``: a faiss kNN index over the image embeddings that scoring saved.

Input: clip-retrieval's embedding layout in ``DATASET/embeddings`` (``img_emb/img_emb_N.npy`` +
``metadata/metadata_N.parquet``, one part per shard, L2-normalised, so inner product = cosine).
Output, in clip-retrieval's back-end layout so ``clip-retrieval back`` can serve it as an
``indice_folder``::

    DATASET/index/image.index                 # faiss, inner product; row i = faiss id i
    DATASET/index/metadata/metadata_N.parquet # the key mapping: the parts' metadata, same order
    DATASET/index/index.json                  # what was indexed (parts + fingerprints): the commit point

Index choice (``kind="auto"``): below :data:`EXACT_MAX` vectors an exact ``IndexFlatIP``
(brute force; 200k x 512 is 400 MB, and a query costs a fifth of the 1M exact numbers in
bench/RESULTS.md: ~24 ms batched, ~130 ms alone on a loaded 2-core machine); above it
``IVF{nlist},PQ{m}x4fs,Refine(SQfp16)``: an inverted file over ``nlist ~ 4*sqrt(n)`` k-means
cells, 4-bit fast-scan product codes (``m = d/8`` codes: 32 bytes a vector at 512-d) to find
candidates, re-ranked with fp16 copies of the vectors (1 KB a vector at 512-d; half of float32),
so similarities are near-exact: at 1M x 512 (bench/index_bench.py) recall@10 0.99 against exact
search and 17 ms a query (p50, 2 cores) with ``nprobe`` :data:`NPROBE` and ``k_factor``
:data:`K_FACTOR` (the re-ranking depth decides the recall; both are stored in the index).

Only kept samples are indexed: the embeddings folder keeps the vectors of rows a later decision
dropped (a re-cut ``clipcrawl score --threshold/--top-fraction`` without ``--save-embeddings``,
dedup, curate), so each run reads the ``key`` and ``status`` columns of the finished shard Parquets
(:func:`kept_keys`) and indexes only the vectors whose row is ``success`` now; success rows without
a vector are logged (not searchable). ``index.json`` records which rows of each part were indexed
(``selection``) and a fingerprint of every shard Parquet (``shards``): ``search`` compares them to
the shards it finds and filters its results by the current statuses when they differ, and
``clipcrawl verify`` reports such an index as stale. A dataset without finished shards (bare
embeddings) indexes every vector.

Incremental: a rerun reads ``index.json``; when the indexed parts are unchanged (same
fingerprints and selections) and new parts sort after them, only the new parts' vectors are added
(a flat index grows exactly; an IVF index reuses its trained cells until the collection has grown
:data:`RETRAIN_GROWTH` times since training, or crosses :data:`EXACT_MAX`, then it is rebuilt).
Changed statuses (a different selection of an indexed part) refill the index: its vectors are
replaced by the kept ones, an IVF index keeps its trained cells. A changed or removed part (a
re-score) rebuilds everything. Files are written with atomic_open,
``index.json`` last: a reader that finds ``image.index`` and ``index.json`` disagreeing on the
vector count knows a write was interrupted, and the next run rebuilds.
"""

from __future__ import annotations

import hashlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.progress import log
from clipcrawl.base.shardfiles import STATS_SUFFIX
from clipcrawl.base.storage import atomic_open, fs_and_path, read_json, read_parquet, write_json
from clipcrawl.schemas.status import Status

INDEX_DIR = "index"
INDEX_FILE = "image.index"
STATE_FILE = "index.json"
FORMAT = "clipcrawl-index"
EXACT_MAX = 200_000
NPROBE = 64
K_FACTOR = 32  # refine: re-rank k * K_FACTOR candidates with the fp16 vectors (cheap: 320 dot products for k=10)
RETRAIN_GROWTH = 4.0
KINDS = ("auto", "flat", "ivfpq")


class IndexUnavailable(RuntimeError):
    """No embeddings, or an index that does not match them."""


@dataclass(frozen=True)
class IndexSpec:
    kind: str  # flat | ivfpq
    factory: str  # faiss index_factory string
    nprobe: int | None = None


@dataclass
class IndexReport:
    action: str  # built | refilled | appended | unchanged
    kind: str
    factory: str
    ntotal: int
    added: int
    seconds: float
    path: str
    parts: list[str] = field(default_factory=list)
    dropped: int = 0  # vectors of the embeddings folder left out: their row is not success now
    missing: int = 0  # success rows without a saved vector (not searchable)
    missing_examples: list[str] = field(default_factory=list)


def index_dir(dataset: str) -> str:
    return DatasetLayout.of(dataset).p(INDEX_DIR)


def _pow2(x: float) -> int:
    return 1 << max(0, round(math.log2(max(1.0, x))))


def choose_spec(n: int, d: int, kind: str = "auto", exact_max: int = EXACT_MAX) -> IndexSpec:
    """The index for ``n`` vectors of dimension ``d`` (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "flat" or (kind == "auto" and n < exact_max):
        return IndexSpec("flat", "Flat")
    nlist = min(65536, max(16, _pow2(4 * math.sqrt(max(n, 1)))))
    nlist = min(nlist, max(16, n // 39))  # faiss wants >= 39 training points per cell
    m = next(m for m in (d // 8, d // 4, d // 2, d) if m > 0 and d % m == 0 and m % 2 == 0) if d > 1 else 1
    return IndexSpec("ivfpq", f"IVF{nlist},PQ{m}x4fs,Refine(SQfp16)", NPROBE)


# ------------------------------------------------------------------ current statuses of the shards
def shard_fingerprints(dataset: str) -> dict[str, str]:
    """``{shard name: fingerprint of its Parquet}`` of the finished shards (stats file present), from
    one listing of the shards folder (no file is read): what the statuses were taken from."""
    from fsspec.utils import tokenize

    folder = DatasetLayout.of(dataset).shards
    fs, p = fs_and_path(folder)
    if not fs.isdir(p):
        return {}
    fs.invalidate_cache(p)
    entries = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in fs.ls(p, detail=True)}
    out = {}
    for base, info in entries.items():
        stem = base[:-len(".parquet")] if base.endswith(".parquet") else ""
        if stem.isdigit() and f"{stem}{STATS_SUFFIX}" in entries:
            out[stem] = tokenize({k: v for k, v in info.items() if k != "name"})
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def kept_keys(dataset: str, workers: int = 8) -> tuple[pa.Array | None, dict[str, str]]:
    """The keys whose row is ``success`` in the finished shard Parquets now (only the ``key`` and
    ``status`` columns are read) and the shards' fingerprints (taken before reading, so a shard
    rewritten meanwhile shows as changed). ``None`` when the dataset has no finished shard (bare
    embeddings: nothing says which rows are kept). An unreadable shard keeps none of its rows."""
    import pyarrow.compute as pc

    fps = shard_fingerprints(dataset)
    if not fps:
        return None, {}
    folder = DatasetLayout.of(dataset).shards

    def one(name: str) -> pa.Array:
        url = f"{folder}/{name}.parquet"
        try:
            t = read_parquet(url, ["key", "status"])
        except Exception as e:  # noqa: BLE001 - its rows cannot be shown kept: left out
            log.warning("index: %s: cannot read key/status (%s: %s); its rows are treated as not kept",
                        url, type(e).__name__, e)
            return pa.array([], pa.string())
        ok = pc.fill_null(pc.equal(t.column("status"), Status.SUCCESS.value), False)
        return t.column("key").filter(ok).combine_chunks().cast(pa.string())

    with ThreadPoolExecutor(max(1, min(workers, len(fps)))) as pool:
        arrays = list(pool.map(one, fps))
    return pa.concat_arrays(arrays) if arrays else pa.array([], pa.string()), fps


def kept_mask(keys: pa.Array | pa.ChunkedArray, success: pa.Array | None) -> np.ndarray:
    """Bool mask over ``keys``: the key's row is success now (all True when ``success`` is None)."""
    import pyarrow.compute as pc

    if success is None:
        return np.ones(len(keys), dtype=bool)
    if len(keys) == 0:
        return np.zeros(0, dtype=bool)
    got = pc.is_in(keys.cast(pa.string()), value_set=success)
    return np.asarray(pc.fill_null(got, False).to_numpy(zero_copy_only=False), dtype=bool)


def _selection(mask: np.ndarray) -> str:
    """A fingerprint of which rows of a part are indexed."""
    return hashlib.sha1(np.packbits(mask).tobytes() + str(len(mask)).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ parts of the embeddings folder
@dataclass(frozen=True)
class Part:
    name: str
    img: str
    meta: str
    rows: int
    fingerprint: str


def embedding_parts(dataset: str) -> tuple[list[Part], int]:
    """The parts of ``DATASET/embeddings`` in id order and the dimension (validated layout)."""
    from clipcrawl.pipelines.manifest import check_embeddings

    emb = DatasetLayout.of(dataset).embeddings
    fs, _ = fs_and_path(emb)
    try:
        layout = check_embeddings(emb)
    except ValueError as e:
        raise IndexUnavailable(f"{emb}: {e}") from None
    parts = []
    for name in layout.parts:
        img, meta = f"{emb}/img_emb/img_emb_{name}.npy", f"{emb}/metadata/metadata_{name}.parquet"
        fp = "-".join(str(fs.checksum(fs_and_path(u)[1])) for u in (img, meta))
        parts.append(Part(name, img, meta, _npy_rows(img), fp))
    return parts, int(layout.image_dim or 0)


def _npy_rows(url: str) -> int:
    fs, p = fs_and_path(url)
    with fs.open(p, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape = read(f)[0]
    return int(shape[0])


def load_vectors(url: str) -> np.ndarray:
    fs, p = fs_and_path(url)
    with fs.open(p, "rb") as f:
        return np.ascontiguousarray(np.load(f), dtype=np.float32)


# ------------------------------------------------------------------ reading and writing the index
def read_state(folder: str) -> dict[str, Any] | None:
    fs, p = fs_and_path(f"{folder}/{STATE_FILE}")
    if not fs.exists(p):
        return None
    state = read_json(f"{folder}/{STATE_FILE}")
    return state if state.get("format") == FORMAT else None


def read_index(folder: str) -> Any:
    import faiss

    fs, p = fs_and_path(f"{folder}/{INDEX_FILE}")
    with fs.open(p, "rb") as f:
        data = f.read()
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def set_search_params(index: Any, nprobe: int | None, k_factor: int = K_FACTOR) -> None:
    import faiss

    if nprobe:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = min(nprobe, ivf.nlist)
    refine = faiss.try_extract_index_ivf(index) is not None and hasattr(index, "k_factor")
    if refine:
        index.k_factor = float(k_factor)


def _write_index(index: Any, folder: str) -> None:
    import faiss

    with atomic_open(f"{folder}/{INDEX_FILE}") as f:
        f.write(faiss.serialize_index(index).tobytes())


def _copy(src: str, dst: str) -> None:
    fs, p = fs_and_path(src)
    with fs.open(p, "rb") as f, atomic_open(dst) as out:
        out.write(f.read())


def _train_sample(parts: list[Part], masks: dict[str, np.ndarray], n_train: int, seed: int = 0) -> np.ndarray:
    rows = {p.name: np.flatnonzero(masks[p.name]) for p in parts}
    total = sum(len(r) for r in rows.values())
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, size=min(n_train, total), replace=False))
    out, start = [], 0
    for p in parts:
        n = len(rows[p.name])
        sel = pick[(pick >= start) & (pick < start + n)] - start
        if len(sel):
            out.append(load_vectors(p.img)[rows[p.name][sel]])
        start += n
    return np.concatenate(out)


def _new_index(spec: IndexSpec, d: int, parts: list[Part], masks: dict[str, np.ndarray]) -> Any:
    import faiss

    if spec.kind == "flat":
        return faiss.IndexFlatIP(d)
    index = faiss.index_factory(d, spec.factory, faiss.METRIC_INNER_PRODUCT)
    nlist = faiss.extract_index_ivf(index).nlist
    t0 = time.monotonic()
    sample = _train_sample(parts, masks, max(64 * nlist, 100_000) if nlist > 2048 else 100 * nlist)
    index.train(sample)
    log.info("index: trained %s on %d vectors in %.1fs", spec.factory, len(sample), time.monotonic() - t0)
    set_search_params(index, spec.nprobe)
    return index


def _plan(state: dict[str, Any] | None, parts: list[Part], masks: dict[str, np.ndarray], d: int, kind: str,
          exact_max: int, ntotal_on_disk: int | None) -> tuple[str, list[Part]]:
    """``("unchanged"|"append"|"refill"|"rebuild", parts to add)``."""
    if state is None or ntotal_on_disk != state.get("ntotal") or state.get("dim") != d:
        return "rebuild", parts
    old = state.get("parts", [])
    if len(old) > len(parts) or any(o["part"] != p.name or o["fingerprint"] != p.fingerprint
                                    for o, p in zip(old, parts)):
        return "rebuild", parts
    total = sum(int(masks[p.name].sum()) for p in parts)
    spec = choose_spec(total, d, kind, exact_max)
    if spec.kind != state.get("kind") or (kind != "auto" and kind != state.get("kind")):
        return "rebuild", parts
    if spec.kind == "ivfpq" and total > RETRAIN_GROWTH * max(1, state.get("trained_on", 0)):
        return "rebuild", parts
    if any(o.get("selection") != _selection(masks[p.name]) for o, p in zip(old, parts)):
        return "refill", parts  # statuses changed since: the same trained index, the kept vectors
    new = parts[len(old):]
    return ("unchanged" if not new else "append"), new


def _write_metadata(part: Part, mask: np.ndarray, dst: str) -> None:
    """The part's metadata rows that are indexed, in order (a byte copy when all are)."""
    import pyarrow.parquet as pq

    if mask.all():
        _copy(part.meta, dst)
        return
    table = read_parquet(part.meta).filter(pa.array(mask))
    with atomic_open(dst) as f:
        pq.write_table(table, f)


def build_index(dataset: str, kind: str = "auto", exact_max: int = EXACT_MAX, rebuild: bool = False) -> IndexReport:
    """Create or extend ``DATASET/index`` from ``DATASET/embeddings``: the vectors of the rows that are
    ``success`` in the shard Parquets now (see the module docstring)."""
    t0 = time.monotonic()
    folder = index_dir(dataset)
    parts, d = embedding_parts(dataset)
    if sum(p.rows for p in parts) == 0:
        raise IndexUnavailable(f"{dataset}: the embeddings folder has no vectors (score with --save-embeddings)")
    success, shard_fps = kept_keys(dataset)
    masks, emb_keys = {}, []
    for p in parts:
        keys = read_parquet(p.meta, ["key"]).column("key")
        emb_keys.append(keys.combine_chunks().cast(pa.string()))
        masks[p.name] = kept_mask(keys, success)
    total = sum(int(m.sum()) for m in masks.values())
    dropped = sum(p.rows for p in parts) - total
    missing, missing_examples = _without_vector(success, emb_keys)
    if dropped:
        log.info("index: %d vectors of samples that are not success now are left out (a re-cut, dedup or "
                 "curate after scoring)", dropped)
    if missing:
        log.warning("index: %d success rows have no saved embedding and are not searchable (score them with "
                    "--save-embeddings): %s", missing, ", ".join(missing_examples))
    state = None if rebuild else read_state(folder)
    index = None
    if state is not None:
        try:
            index = read_index(folder)
        except Exception as e:  # noqa: BLE001 - unreadable index: rebuild it
            log.warning("index: %s/%s unreadable (%s); rebuilding", folder, INDEX_FILE, e)
    action, todo = _plan(state, parts, masks, d, kind, exact_max, None if index is None else int(index.ntotal))
    counts = dict(dropped=dropped, missing=missing, missing_examples=missing_examples)
    if action == "unchanged":
        assert state is not None
        if state.get("shards") != shard_fps:  # same kept rows, shards rewritten: record what was checked
            write_json({**state, "shards": shard_fps}, f"{folder}/{STATE_FILE}")
        return IndexReport("unchanged", state["kind"], state["factory"], state["ntotal"], 0,
                           time.monotonic() - t0, folder, [p.name for p in parts], **counts)
    if action == "rebuild":
        spec = choose_spec(total, d, "flat" if total == 0 else kind, exact_max)
        index = _new_index(spec, d, parts, masks)
        trained_on = total
        state = None
    else:
        assert state is not None and index is not None
        spec = IndexSpec(state["kind"], state["factory"], state.get("nprobe"))
        trained_on = state.get("trained_on", total)
        if action == "refill":
            index.reset()  # keeps an IVF index's trained cells and codebooks
    for p in todo:
        m = masks[p.name]
        if m.any():
            index.add(load_vectors(p.img)[m] if not m.all() else load_vectors(p.img))
        _write_metadata(p, m, f"{folder}/metadata/metadata_{p.name}.parquet")
    if int(index.ntotal) != total:
        raise IndexUnavailable(f"index holds {index.ntotal} vectors, the kept embeddings {total}")
    _write_index(index, folder)
    _remove_stale_metadata(folder, {p.name for p in parts})
    from clipcrawl.pipelines.inspect.recorded import recorded_model

    model = recorded_model(dataset).name
    sizes = [int(masks[p.name].sum()) for p in parts]
    starts = np.cumsum([0] + sizes)[:-1]
    write_json({
        "format": FORMAT, "version": 2, "kind": spec.kind, "factory": spec.factory, "metric": "inner_product",
        "dim": d, "ntotal": total, "trained_on": trained_on, "nprobe": spec.nprobe, "k_factor": K_FACTOR,
        "clip_model": model, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # rows: vectors of the part in the index (its kept rows), embedding_rows: in the embeddings part
        "parts": [{"part": p.name, "rows": n, "start": int(s), "embedding_rows": p.rows,
                   "fingerprint": p.fingerprint, "selection": _selection(masks[p.name])}
                  for p, n, s in zip(parts, sizes, starts)],
        "shards": shard_fps,  # the shard Parquets the kept rows were read from (search compares them)
        "dropped": dropped, "missing": missing,
    }, f"{folder}/{STATE_FILE}")
    return IndexReport({"rebuild": "built", "refill": "refilled", "append": "appended"}[action], spec.kind,
                       spec.factory, total, sum(int(masks[p.name].sum()) for p in todo), time.monotonic() - t0,
                       folder, [p.name for p in parts], **counts)


def _without_vector(success: pa.Array | None, emb_keys: list[pa.Array]) -> tuple[int, list[str]]:
    """How many success keys have no row in the embeddings folder, and a few of them."""
    import pyarrow.compute as pc

    if success is None or len(success) == 0:
        return 0, []
    have = pa.concat_arrays(emb_keys) if emb_keys else pa.array([], pa.string())
    lost = success.filter(pc.invert(pc.fill_null(pc.is_in(success, value_set=have), False)))
    return len(lost), sorted(lost.slice(0, 1000).to_pylist())[:3]


def _remove_stale_metadata(folder: str, names: set[str]) -> None:
    fs, p = fs_and_path(f"{folder}/metadata")
    if not fs.isdir(p):
        return
    for f in fs.ls(p, detail=False):
        base = f.rstrip("/").rsplit("/", 1)[-1]
        if base.startswith("metadata_") and base.endswith(".parquet") and base[9:-8] not in names:
            fs.rm(f)
