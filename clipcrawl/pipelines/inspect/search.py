"""``clipcrawl search``: embed a text prompt (or an image) with the dataset's own CLIP model and
return the nearest kept samples by cosine similarity.

The model is the one that scored the dataset: the ``clip_model`` recorded in its samples
(``clipcrawl-tiny``, ``ViT-B-32/openai``, ``hf-hub:org/repo``), resolved with the newest
``config.yaml`` that produced that name (so a local checkpoint path is found again); ``model=`` /
``pretrained=`` override it when the weights live elsewhere. Queries are embedded with the exact
fp32 path and L2-normalised, like the stored image embeddings.

Vectors come from ``DATASET/index`` (``clipcrawl index``); without an index (or with one that no
longer matches the embeddings) the search is exact over ``DATASET/embeddings`` in memory.

Only samples whose row is ``success`` now are returned. ``clipcrawl index`` indexes those, and
records the shard Parquets it read the statuses from; when the shards differ now (a re-cut, dedup or
curate after indexing), or there is no index (the embeddings folder keeps the vectors of dropped
rows), the ``key``/``status`` columns of the shards are read once and every query is over-fetched
and filtered by them, so a stale index never returns a dropped row.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.progress import log
from clipcrawl.base.storage import fs_and_path, read_parquet
from clipcrawl.pipelines.inspect.index import (
    K_FACTOR,
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
from clipcrawl.pipelines.inspect.recorded import recorded_model

HIT_COLUMNS = ("key", "caption", "url", "shard", "clip_similarity", "punsafe", "pwatermark", "width", "height")


class Searcher:
    """kNN over a dataset's image embeddings; ``search(vector, k)`` -> hits, best first.

    ``success_keys``: the keys whose row is success now, when the caller has them (browse reads every
    shard anyway); otherwise they are read from the shards when the index is not known current."""

    def __init__(self, dataset: str | os.PathLike[str], model: str | None = None, pretrained: str | None = None,
                 device: str = "auto", nprobe: int | None = None, success_keys: pa.Array | None = None) -> None:
        self.dataset = os.fspath(dataset).rstrip("/")
        self._model_args = (model, pretrained, device)
        self._clip: Any = None
        self._encoder: Any = None
        folder = index_dir(self.dataset)
        state = read_state(folder)
        self.index, self.state = None, state
        if state is not None:
            index = read_index(folder)
            if int(index.ntotal) == state["ntotal"]:
                self.index = index
                set_search_params(index, nprobe or state.get("nprobe"), state.get("k_factor", K_FACTOR))
                self.meta = _concat([read_parquet(f"{folder}/metadata/metadata_{p['part']}.parquet")
                                     for p in state["parts"]])
                self._starts = [(p["start"], p["part"]) for p in state["parts"]]
            else:
                log.warning("index: %s is incomplete (an interrupted write?); searching the embeddings exactly "
                            "(rerun clipcrawl index)", folder)
        if self.index is None:
            self._load_exact()
        self.kind = self.state["kind"] if self.state is not None else "exact (no index)"
        self.dim = int(self.index.d)
        keys = self.meta.column("key").to_pylist() if "key" in self.meta.column_names else []
        self.ids = {k: i for i, k in enumerate(keys)}
        self._part_rows: dict[str, dict[str, int]] = {}
        #: per id, whether its row is success now; None: every id (the index matches the statuses)
        self.live: np.ndarray | None = self._live(success_keys)

    def _live(self, success_keys: pa.Array | None) -> np.ndarray | None:
        if self.state is not None and self.state.get("shards") is not None \
                and self.state["shards"] == shard_fingerprints(self.dataset):
            return None  # the statuses the index was built from are the shards' statuses now
        if success_keys is None:
            success_keys, _ = kept_keys(self.dataset)
            if success_keys is None:
                return None  # no shards: nothing says which rows are kept
        if "key" not in self.meta.column_names:
            return None
        live = kept_mask(self.meta.column("key"), success_keys.cast(pa.string()))
        if live.all():
            return None
        if self.state is not None:
            log.warning("index: %d of %d vectors in %s are of samples that are not success now (the statuses "
                        "changed after clipcrawl index); search leaves them out (rerun clipcrawl index)",
                        int((~live).sum()), len(live), index_dir(self.dataset))
        return live

    @property
    def searchable(self) -> int:
        """Vectors a search can return (their row is success now)."""
        return len(self) if self.live is None else int(self.live.sum())

    def _load_exact(self) -> None:
        import faiss

        parts, d = embedding_parts(self.dataset)
        log.info("search: no index in %s; exact search over %d embedding parts (clipcrawl index builds one)",
                 index_dir(self.dataset), len(parts))
        self.index = faiss.IndexFlatIP(d)
        for p in parts:
            self.index.add(load_vectors(p.img))
        self.meta = _concat([read_parquet(p.meta) for p in parts])
        starts = np.cumsum([0] + [p.rows for p in parts])[:-1]
        self._starts = [(int(s), p.name) for s, p in zip(starts, parts)]
        self.state = None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # -------------------------------------------------------------- query vectors
    def _load_model(self) -> None:
        if self._encoder is not None:
            return
        from clipcrawl.filters.clip.encoders import make_encoder
        from clipcrawl.filters.clip.model import load_clip

        model, pretrained, device = self._model_args
        if model is None:
            rec = recorded_model(self.dataset)
            if rec.model is None:
                raise IndexUnavailable(f"{self.dataset}: no clip_model recorded; pass --model (and --pretrained)")
            model, pretrained = rec.model, rec.pretrained
        self._clip = load_clip(model, pretrained, device=device, precision="fp32")
        if self._clip.embed_dim != self.dim:
            raise IndexUnavailable(f"model {self._clip.name} embeds in {self._clip.embed_dim} dimensions, "
                              f"the dataset's embeddings have {self.dim}: pass the model that scored it")
        self._encoder = make_encoder(self._clip)  # fp32: open_clip eager; tiny without torch: ONNX

    def embed_text(self, prompt: str) -> np.ndarray:
        self._load_model()
        return self._encoder.encode_texts(self._clip.tokenizer([prompt]))

    def embed_image(self, image: bytes | str | os.PathLike[str]) -> np.ndarray:
        from PIL import Image

        self._load_model()
        if not isinstance(image, bytes):
            fs, p = fs_and_path(image)
            with fs.open(p, "rb") as f:
                image = f.read()
        with Image.open(io.BytesIO(image)) as im:
            pixels = self._clip.preprocess(im.convert("RGB"))[None]
        return self._encoder.encode_images(pixels)

    def vector_of(self, key: str) -> np.ndarray | None:
        """The stored image embedding of sample ``key`` (None if it has none)."""
        i = self.ids.get(key)
        if i is None:
            return None
        starts = [s for s, _ in self._starts]
        part = self._starts[int(np.searchsorted(starts, i, side="right")) - 1][1]  # ties: empty parts first
        emb = DatasetLayout.of(self.dataset).embeddings
        if part not in self._part_rows:  # the index keeps the kept rows of a part: find the key's row in it
            keys = read_parquet(f"{emb}/metadata/metadata_{part}.parquet", ["key"]).column("key").to_pylist()
            self._part_rows[part] = {k: j for j, k in enumerate(keys)}
        j = self._part_rows[part].get(key)
        return None if j is None else load_vectors(f"{emb}/img_emb/img_emb_{part}.npy")[j][None, :]

    # -------------------------------------------------------------- search
    def search(self, vector: np.ndarray, k: int = 20,
               keep: Callable[[np.ndarray], np.ndarray] | None = None) -> list[dict[str, Any]]:
        """Top ``k`` hits for ``vector`` (1, d), best first; ``keep(ids) -> bool mask`` filters
        candidates (the search widens until ``k`` pass or the whole index was seen). Ids whose row is
        not success now are never returned."""
        n = len(self)
        if n == 0 or k <= 0 or self.searchable == 0:
            return []
        if self.live is not None:
            live, user = self.live, keep
            keep = (lambda ids: live[ids]) if user is None else (lambda ids: live[ids] & np.asarray(user(ids), bool))
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        over = 1 if self.live is None else max(1, round(n / max(1, self.searchable)))  # the dropped share
        kk = min(n, k if keep is None else 8 * k * over)
        while True:
            sims, ids = self.index.search(q, kk)
            valid = ids[0] >= 0
            sims, ids = sims[0][valid], ids[0][valid]
            if keep is not None and len(ids):
                mask = np.asarray(keep(ids), dtype=bool)
                sims, ids = sims[mask], ids[mask]
            if len(ids) >= k or kk >= n:
                break
            kk = min(n, kk * 4)
        order = np.argsort(-sims, kind="stable")[:k]
        rows = self.meta.take(pa.array(ids[order]))
        cols = {c: rows.column(c).to_pylist() for c in HIT_COLUMNS if c in rows.column_names}
        return [{"rank": r + 1, "id": int(ids[j]), "similarity": round(float(sims[j]), 6),
                 **{c: v[r] for c, v in cols.items()}} for r, j in enumerate(order)]


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({"key": pa.array([], pa.string())})
