"""Many clients at once on ``serve`` (the demo dataset): text, image and embedding queries with and
without dedup, metadata calls; no error, every answer right for its own query, latencies recorded
(printed, and written to the test's tmp folder as latencies.json)."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from .conftest import call
from .test_serve_api import stored

pytestmark = [pytest.mark.slow, pytest.mark.network]

CLIENTS, PER_CLIENT = 24, 8


def test_many_clients(indexed_demo, tmp_path, capsys):
    from clipcrawl.base.shardfiles import list_shards, read_images
    from clipcrawl.pipelines.inspect.serve import ServeServer

    vecs, rows = stored(indexed_demo)
    images = read_images(list_shards(indexed_demo)[0])
    keys = sorted(images)[:4]
    with ServeServer([str(indexed_demo)], warm=True) as srv:
        def client(c: int) -> list[tuple[str, float]]:
            out = []
            for j in range(PER_CLIENT):
                kind = ("text", "image", "embedding", "metadata")[(c + j) % 4]
                i = (c * PER_CLIENT + j) % len(rows)
                body = {"modality": "image", "indice_name": "demo", "num_images": 10, "deduplicate": j % 2 == 0}
                if kind == "text":
                    body["text"] = f"a {('red', 'blue', 'green')[i % 3]} {('circle', 'square')[i % 2]}"
                elif kind == "image":
                    body["image"] = base64.b64encode(images[keys[i % 4]]).decode()
                elif kind == "embedding":
                    body["embedding_input"] = vecs[i].tolist()
                else:
                    body = {"ids": [i, (i + 1) % len(rows)], "indice_name": "demo"}
                t = time.perf_counter()
                status, _, res = call(srv.url + ("/metadata" if kind == "metadata" else "/knn-service"), body)
                dt = time.perf_counter() - t
                assert status == 200, (kind, res)
                if kind == "metadata":
                    assert [m["metadata"]["key"] for m in res] == [rows[i]["key"], rows[(i + 1) % len(rows)]["key"]]
                else:
                    assert res and all(r["url"] == rows[r["id"]]["url"] for r in res), kind
                if kind == "embedding":
                    assert res[0]["similarity"] > 0.999
                if kind == "image":
                    assert keys[i % 4] in [r["key"] for r in res[:3]]
                out.append((kind, dt))
            return out

        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [x for r in pool.map(client, range(CLIENTS)) for x in r]
        wall = time.perf_counter() - t0
    assert len(results) == CLIENTS * PER_CLIENT
    stats = {"clients": CLIENTS, "requests": len(results), "errors": 0, "wall_s": round(wall, 2),
             "req_per_s": round(len(results) / wall, 1)}
    for kind in ("text", "image", "embedding", "metadata"):
        lat = [dt for k, dt in results if k == kind]
        stats[kind] = {"n": len(lat), "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
                       "p95_ms": round(float(np.percentile(lat, 95)) * 1000, 1)}
    (tmp_path / "latencies.json").write_text(json.dumps(stats, indent=1))
    with capsys.disabled():
        print(f"\nserve, {CLIENTS} concurrent clients: {json.dumps(stats)}")
