"""Results follow the dataset's current statuses: a re-cut (``score --threshold`` without
``--save-embeddings``) while ``serve`` runs drops rows the index still holds; the running server
notices (shard fingerprints), never returns them and answers ``{}`` for their ids on ``/metadata``;
``clipcrawl index`` again and it serves the new index. Every hit is checked against the shard Parquets
read with pyarrow."""

from __future__ import annotations

import pytest

from tests.pipelines.inspect.test_stale_index import PROMPTS, _dataset, embedded, score, statuses

from .conftest import call

pytestmark = [pytest.mark.slow]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCRAWL_CACHE", str(tmp_path / "cache"))


def ask(srv, prompt: str, k: int = 100) -> list[dict]:
    status, _, res = call(srv.url + "/knn-service", {"text": prompt, "modality": "image", "indice_name": "ds",
                                                      "num_images": k, "deduplicate": False})
    assert status == 200, res
    return res


def test_recut_while_serving(tmp_path, monkeypatch):
    from clipcrawl.cli import main
    from clipcrawl.pipelines.inspect import serve

    monkeypatch.setattr(serve, "REFRESH_SECONDS", 0.0)
    root = _dataset(tmp_path / "ds")
    score(root, "--threshold", "0.3", "--save-embeddings")
    assert main(["-q", "index", str(root)]) == 0
    with serve.ServeServer([str(root)]) as srv:
        st = statuses(root)
        before = {k for k in embedded(root) if st[k] == "success"}
        for prompt in PROMPTS:
            assert {h["key"] for h in ask(srv, prompt)} == before
        ids = {h["key"]: h["id"] for h in ask(srv, PROMPTS[0])}
        score(root, "--top-fraction", "0.5")  # a re-cut: the vectors stay, about half the rows are dropped
        st = statuses(root)
        now = {k for k in before if st[k] == "success"}
        assert now and now < before
        for prompt in PROMPTS:
            hits = ask(srv, prompt)
            assert {h["key"] for h in hits} == now and all(st[h["key"]] == "success" for h in hits)
        gone = sorted(before - now)
        status, _, meta = call(srv.url + "/metadata", {"ids": [ids[k] for k in gone] + [ids[min(now)]],
                                                       "indice_name": "ds"})
        assert status == 200 and [m["metadata"] for m in meta[:-1]] == [{}] * len(gone)
        assert meta[-1]["metadata"]["key"] == min(now)
        assert main(["-q", "index", str(root)]) == 0  # re-indexed: served from the new index
        hits = ask(srv, PROMPTS[1])
        assert {h["key"] for h in hits} == now
        assert max(h["id"] for h in hits) < len(now)
