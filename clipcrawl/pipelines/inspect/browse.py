"""``clipcrawl browse``: a local web page over a dataset: search box, thumbnail grid, filters.

An aiohttp server bound to 127.0.0.1 by default (read-only; requests whose ``Host`` is not the
address it listens on are refused, against DNS rebinding). It serves one static page
(``clipcrawl/assets/browse/``: HTML, JS and CSS, no external assets, a strict CSP) and::

    GET /api/info                  dataset, counts, index kind, model, facets (statuses, domains, languages)
    GET /api/search?q=&like=&k=&offset=&kept=&status=&domain=&lang=&min=&max=
                                   q: text prompt, like: a sample key (its stored image embedding);
                                   neither: browse rows in shard order. Filters: kept=kept|dropped,
                                   status, domain (URL host), lang (page_language prefix), min/max
                                   clip_similarity; min_/max_ aesthetic, text_area,
                                   caption_ocr_overlap, nsfw_score (curation signals).
    GET /image/{key}               the sample's image from its shard (or shards/dropped/NNNNN.tar)
    GET /meta/{key}                every column of the sample's row (JSON)
    GET /indices-list, POST /knn-service, POST /metadata
                                   clip-retrieval back's API, as ``clipcrawl serve`` answers it
                                   (:mod:`.serve`), so ClipClient can query a browsed dataset

Rows are every row of ``shards/NNNNN.parquet`` (kept and dropped); semantic search covers the
samples that have saved embeddings and are ``success`` now (the searcher filters by the statuses
read here, so an index built before a re-cut or dedup never shows a dropped row), so a query with
``kept=dropped`` finds none.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.progress import log
from clipcrawl.base.shardfiles import IMAGE_EXTS, index_tar, list_shards, shard_images
from clipcrawl.base.storage import fs_and_path, read_parquet

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "browse"
ROW_COLUMNS = ("key", "status", "error_message", "caption", "url", "page_language", "clip_similarity",
               "punsafe", "pwatermark", "width", "height", "duplicate_of", "ai_generated", "license",
               "aesthetic", "text_area", "caption_ocr_overlap", "nsfw_score", "ocr_text")
#: curation signals (clipcrawl.filters.signals) the page filters on: ``min_<col>`` / ``max_<col>``
SIGNAL_FILTERS = ("aesthetic", "text_area", "caption_ocr_overlap", "nsfw_score")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_TYPES = {"clip_similarity": pa.float32(), "punsafe": pa.float32(), "pwatermark": pa.float32(),
          "width": pa.int32(), "height": pa.int32(), "ai_generated": pa.bool_(),
          **dict.fromkeys(SIGNAL_FILTERS, pa.float32())}
MAX_K = 500
CTYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def _py(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class BrowseData:
    """The rows, facets, images and (lazily) the searcher of one dataset."""

    def __init__(self, dataset: str | os.PathLike[str], searcher: Any = None) -> None:
        self.dataset = os.fspath(dataset).rstrip("/")
        self.layout = DatasetLayout.of(self.dataset)
        self.shards = {r.name: r for r in list_shards(self.layout.shards)}
        tables = []
        for ref in self.shards.values():
            t = read_parquet(ref.parquet)
            cols = {c: t.column(c) for c in ROW_COLUMNS if c in t.column_names}
            cols["shard"] = pa.array([ref.name] * t.num_rows, pa.string())
            tables.append(pa.table(cols))
        rows = pa.concat_tables(tables, promote_options="default") if tables else pa.table(
            {"key": pa.array([], pa.string()), "status": pa.array([], pa.string())})
        for c in ROW_COLUMNS:
            if c not in rows.column_names:
                rows = rows.append_column(c, pa.nulls(rows.num_rows, _TYPES.get(c, pa.string())))
        url = rows.column("url").cast(pa.string())
        host = pc.struct_field(pc.extract_regex(url, r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/]*@)?(?P<h>[^/:?#]+)"), [0])
        self.rows = rows.append_column("domain", pc.utf8_lower(host))
        self.by_key: dict[str, int] = {}
        for i, (k, s) in enumerate(zip(self.rows.column("key").to_pylist(), self.rows.column("status").to_pylist())):
            if k not in self.by_key or s == "success":
                self.by_key[k] = i
        self._searcher = searcher
        self._search_lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self._tar_index: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}

    # -------------------------------------------------------------- search back-end
    @property
    def searcher(self) -> Any:
        with self._search_lock:
            if self._searcher is None:
                from clipcrawl.pipelines.inspect.search import Searcher

                self._searcher = Searcher(self.dataset, success_keys=self.success_keys())
            return self._searcher

    def success_keys(self) -> pa.Array:
        """The keys whose row is success now (from the rows read here)."""
        ok = pc.fill_null(pc.equal(self.rows.column("status"), "success"), False)
        return self.rows.column("key").filter(ok).combine_chunks().cast(pa.string())

    def warm(self) -> None:
        """Load the index and the CLIP model ahead of the first query (in a background thread)."""
        try:
            with self._embed_lock:
                self.searcher.embed_text("warm up")
        except Exception as e:  # noqa: BLE001 - the page reports search errors per request
            log.info("browse: search is unavailable: %s", e)

    def info(self) -> dict[str, Any]:
        def counts(col: str, top: int = 50) -> list[list[Any]]:
            vc = pc.value_counts(self.rows.column(col).drop_null()).to_pylist()
            return [[d["values"], d["counts"]] for d in sorted(vc, key=lambda d: -d["counts"])[:top]]

        langs = pc.utf8_slice_codeunits(self.rows.column("page_language").cast(pa.string()), 0, 2)
        kept = int(pc.sum(pc.equal(self.rows.column("status"), "success")).as_py() or 0)
        out = {"dataset": self.dataset, "rows": self.rows.num_rows, "kept": kept, "shards": len(self.shards),
               "statuses": counts("status"), "domains": counts("domain"),
               "languages": [[d["values"], d["counts"]] for d in pc.value_counts(langs.drop_null()).to_pylist()]}
        out["provenance"] = self._provenance()
        try:
            s = self.searcher
            out.update(indexed=len(s), searchable=s.searchable, index=s.kind, model=(s.state or {}).get("clip_model"))
        except Exception as e:  # noqa: BLE001 - no embeddings: browsing still works
            out.update(indexed=0, index=None, search_error=str(e))
        return out

    def _provenance(self) -> dict[str, Any]:
        """Refusals by the image-level opt-outs, AI-generated and licences among the kept rows."""
        from clipcrawl.filters.provenance import licence_breakdown, refusal_kind

        refused: dict[str, int] = {}
        for d in pc.value_counts(self.rows.column("error_message").drop_null()).to_pylist():
            kind = refusal_kind(d["values"])
            if kind:
                refused[kind] = refused.get(kind, 0) + d["counts"]
        ok = pc.fill_null(pc.equal(self.rows.column("status"), "success"), False)
        kept = self.rows.filter(ok)
        ai = int(pc.sum(pc.fill_null(kept.column("ai_generated"), False)).as_py() or 0)
        return {"refused": refused, "ai_generated_kept": ai,
                "licences_kept": licence_breakdown(kept.column("license").to_pylist())}

    def mask(self, params: dict[str, str]) -> np.ndarray:
        """Row filter from the query parameters."""
        r, m = self.rows, np.ones(self.rows.num_rows, dtype=bool)

        def eq(col: str, val: str) -> np.ndarray:
            return pc.fill_null(pc.equal(r.column(col), val), False).to_numpy(zero_copy_only=False)

        kept = params.get("kept", "")
        if kept in ("kept", "dropped"):
            m &= eq("status", "success") if kept == "kept" else ~eq("status", "success")
        if params.get("status"):
            m &= eq("status", params["status"])
        if params.get("domain"):
            m &= eq("domain", params["domain"].lower())
        if params.get("lang"):
            lang = pc.utf8_lower(r.column("page_language").cast(pa.string()))
            m &= pc.fill_null(pc.starts_with(lang, params["lang"].lower()), False).to_numpy(zero_copy_only=False)
        score = pc.fill_null(r.column("clip_similarity").cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        for name, op in (("min", np.greater_equal), ("max", np.less_equal)):
            if params.get(name, "") != "":
                with np.errstate(invalid="ignore"):
                    m &= op(score, float(params[name]))
        for col in SIGNAL_FILTERS:  # rows without the signal fail a bound on it
            for name, op in ((f"min_{col}", np.greater_equal), (f"max_{col}", np.less_equal)):
                if params.get(name, "") != "":
                    v = pc.fill_null(r.column(col).cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
                    with np.errstate(invalid="ignore"):
                        m &= op(v, float(params[name]))
        return m

    def _row(self, i: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        row = {c: _py(self.rows.column(c)[i].as_py()) for c in (*ROW_COLUMNS, "shard", "domain")}
        return {**row, **(extra or {})}

    def query(self, params: dict[str, str]) -> dict[str, Any]:
        k = max(1, min(MAX_K, int(params.get("k") or 60)))
        offset = max(0, int(params.get("offset") or 0))
        m = self.mask(params)
        q, like = (params.get("q") or "").strip(), (params.get("like") or "").strip()
        if not q and not like:
            idx = np.flatnonzero(m)
            return {"mode": "browse", "total": int(len(idx)),
                    "results": [self._row(int(i)) for i in idx[offset:offset + k]]}
        s = self.searcher
        with self._embed_lock:  # one model, requests on executor threads
            vec = s.vector_of(like) if like else s.embed_text(q)
        if vec is None:
            return {"mode": "similar", "total": 0, "results": [], "error": f"{like}: no stored embedding"}
        hit_rows = np.array([self.by_key.get(key, -1) for key in s.meta.column("key").to_pylist()])

        def keep(ids: np.ndarray) -> np.ndarray:
            rows = hit_rows[ids]
            return (rows >= 0) & m[np.maximum(rows, 0)]

        hits = s.search(vec, offset + k, keep=keep)[offset:]
        results = [self._row(int(hit_rows[h["id"]]), {"similarity": h["similarity"], "rank": h["rank"]})
                   for h in hits]
        return {"mode": "similar" if like else "text", "total": len(results), "results": results,
                "searched": len(s), "index": s.kind}

    # -------------------------------------------------------------- images and metadata
    def image(self, key: str) -> tuple[bytes, str] | None:
        i = self.by_key.get(key)
        if i is None:
            return None
        ref = self.shards.get(self.rows.column("shard")[i].as_py())
        if ref is None:
            return None
        for tar in (ref.tar, f"{ref.root}/dropped/{ref.name}.tar"):
            got = self._from_tar(tar, key)
            if got is not None:
                return got
        imgs = shard_images(ref, [key])
        return (imgs[key], "image/jpeg") if key in imgs else None

    def _from_tar(self, url: str, key: str) -> tuple[bytes, str] | None:
        fs, p = fs_and_path(url)
        if url not in self._tar_index:
            self._tar_index[url] = index_tar(url) if fs.exists(p) else {}
        members = self._tar_index[url].get(key, {})
        ext = next((e for e in IMAGE_EXTS if e in members), None)
        if ext is None:
            return None
        offset, size = members[ext]
        with fs.open(p, "rb") as f:
            f.seek(offset)
            return f.read(size), CTYPES.get(ext, "application/octet-stream")

    def meta(self, key: str) -> dict[str, Any] | None:
        i = self.by_key.get(key)
        if i is None:
            return None
        shard = self.rows.column("shard")[i].as_py()
        t = read_parquet(self.shards[shard].parquet)
        t = t.filter(pc.equal(t.column("key"), key))
        skip = {c for c in t.column_names if pa.types.is_binary(t.schema.field(c).type)
                or pa.types.is_large_binary(t.schema.field(c).type)}
        row = {c: _py(t.column(c)[0].as_py()) for c in t.column_names if c not in skip}
        return {**row, "shard": shard}


# ------------------------------------------------------------------ the web app
def make_app(data: BrowseData, allowed_hosts: set[str] | None = None) -> Any:
    from aiohttp import web

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if allowed_hosts is not None and request.host.rsplit(":", 1)[0].strip("[]") not in allowed_hosts:
            raise web.HTTPForbidden(text="unexpected Host header")
        resp = await handler(request)
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        return resp

    async def run(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))

    def static(name: str, ctype: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=(ASSETS / name).read_bytes(), content_type=ctype,
                                headers={"Cache-Control": "no-cache"})
        return handler

    def jsonr(obj: Any, status: int = 200) -> web.Response:
        return web.Response(text=json.dumps(obj, ensure_ascii=False, default=str), status=status,
                            content_type="application/json")

    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def info(request: web.Request) -> web.Response:
        return jsonr(await run(data.info))

    async def search(request: web.Request) -> web.Response:
        try:
            return jsonr(await run(data.query, dict(request.query)))
        except ValueError as e:
            return jsonr({"error": str(e)}, 400)
        except Exception as e:  # noqa: BLE001 - shown on the page, logged here
            log.warning("browse: search failed: %s", e)
            return jsonr({"error": f"{type(e).__name__}: {e}"}, 500)

    async def image(request: web.Request) -> web.Response:
        got = await run(data.image, request.match_info["key"])
        if got is None:
            raise web.HTTPNotFound()
        return web.Response(body=got[0], content_type=got[1], headers={"Cache-Control": "max-age=3600"})

    async def meta(request: web.Request) -> web.Response:
        row = await run(data.meta, request.match_info["key"])
        if row is None:
            raise web.HTTPNotFound()
        return web.Response(text=json.dumps(row, indent=2, ensure_ascii=False, default=str),
                            content_type="application/json")

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", static("index.html", "text/html"))
    app.router.add_get("/browse.js", static("browse.js", "text/javascript"))
    app.router.add_get("/browse.css", static("browse.css", "text/css"))
    app.router.add_get("/favicon.ico", no_content)
    app.router.add_get("/api/info", info)
    app.router.add_get("/api/search", search)
    app.router.add_get("/image/{key}", image)
    app.router.add_get("/meta/{key}", meta)
    # clip-retrieval back's API over the same dataset (clipcrawl serve's): ClipClient works against browse too
    from clipcrawl.pipelines.inspect.serve import Indices, ServedIndex, add_api

    name = data.dataset.rsplit("/", 1)[-1] or "dataset"
    add_api(app, Indices({name: lambda: ServedIndex(data.dataset, name, success_keys=data.success_keys())}))
    return app


class BrowseServer:
    """``with BrowseServer(dataset) as srv: srv.url`` — the browse app served from a thread."""

    def __init__(self, dataset: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0,
                 data: BrowseData | None = None, warm: bool = True) -> None:
        self.data = data or BrowseData(dataset)
        self.warm = warm
        self.host, self.port, self.url = host, port, ""
        self._site: Any = None

    def __enter__(self) -> BrowseServer:
        from clipcrawl.base.websrv import ThreadedSite

        allowed = None if self.host in ("0.0.0.0", "::") else {self.host, "localhost", "127.0.0.1", "::1"}
        self._site = ThreadedSite(lambda: make_app(self.data, allowed), self.host, self.port, "browse").start()
        self.port, self.url = self._site.port, self._site.url + "/"
        if self.warm:
            threading.Thread(target=self.data.warm, name="browse-warm", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._site is not None:
            self._site.stop()
            self._site = None
