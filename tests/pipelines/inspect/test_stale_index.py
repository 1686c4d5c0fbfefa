"""Issue 24 item 9: only kept samples are searchable, also after a re-cut or dedup that changed the
statuses once the index was built (``score --save-embeddings`` keeps the vectors of rows a later
decision drops, so a re-cut needs no rescoring).

Sequence: score --save-embeddings -> index -> re-cut (score --threshold / --top-fraction without
--save-embeddings) -> search and browse return no dropped row, verify reports the stale index ->
index again -> verify clean, search clean; the same after dedup. Every hit is checked with an
independent reader: the shard Parquets read with pyarrow.
"""

from __future__ import annotations

import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.cli import main

PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow star")
N_SHARDS, PER_SHARD = 2, 14
DUPES = 3  # exact copies planted in shard 1 (same image and caption as a shard 0 row, another URL)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCRAWL_CACHE", str(tmp_path / "cache"))


def _dataset(root):
    """DATASET/shards: generated shape pictures with matching captions (a few with a wrong colour, which
    the first threshold drops) and exact copies of shard 0 rows in shard 1 (dedup drops them)."""
    from clipcrawl.assets import shapes
    from clipcrawl.base.shardfiles import ShardRef
    from clipcrawl.pipelines.writer import write_shard

    rng = random.Random(7)
    rows = []
    for i in range(N_SHARDS * PER_SHARD):
        scene = shapes.random_scene(rng)
        buf = io.BytesIO()
        shapes.draw_scene(scene, rng).save(buf, "JPEG", quality=90)
        wrong = [c for c in shapes.COLOURS if c not in (scene.colour, scene.bg)]
        caption = scene.caption(rng, "a {colour} {shape} on a {bg} background",
                                **({"colour": rng.choice(wrong)} if i % 5 == 4 else {}))
        rows.append({"url": f"http://127.0.0.1/{i}.jpg", "caption": caption, "image": buf.getvalue()})
    for j in range(DUPES):
        rows[PER_SHARD + j] = {**rows[j], "url": f"http://127.0.0.1/copy-{j}.jpg"}
    (root / "shards").mkdir(parents=True)
    for shard in range(N_SHARDS):
        chunk = rows[shard * PER_SHARD:(shard + 1) * PER_SHARD]
        n = len(chunk)
        t = pa.table({"key": [f"{shard:05d}{i:04d}" for i in range(n)], "url": [r["url"] for r in chunk],
                      "caption": [r["caption"] for r in chunk], "status": ["success"] * n,
                      "error_message": pa.nulls(n, pa.string()),
                      "image": pa.array([r["image"] for r in chunk], pa.binary())})
        write_shard(ShardRef.of(str(root / "shards"), shard), t)
    return root


def statuses(root) -> dict[str, str]:
    """key -> status, read from the shard Parquets with pyarrow alone."""
    out = {}
    for f in sorted((root / "shards").glob("[0-9]*.parquet")):
        t = pq.read_table(f, columns=["key", "status"])
        out.update(zip(t.column("key").to_pylist(), t.column("status").to_pylist()))
    return out


def embedded(root) -> set[str]:
    return {k for f in (root / "embeddings" / "metadata").glob("*.parquet")
            for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()}


def indexed(root) -> set[str]:
    return {k for f in (root / "index" / "metadata").glob("*.parquet")
            for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()}


def score(root, *args: str) -> None:
    assert main(["-q", "score", str(root), "--model", "tiny", "--precision", "fp32", *args]) == 0


def cli_search(root, capsys, prompt: str, k: int = 100) -> list[dict]:
    capsys.readouterr()
    assert main(["-q", "search", str(root), prompt, "-k", str(k), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_search_clean(root, capsys) -> None:
    """Every hit of the CLI, the Searcher and browse is a success row; with k above the collection, the
    hits are exactly the kept samples that have a vector."""
    from clipcrawl.pipelines.inspect.browse import BrowseData
    from clipcrawl.pipelines.inspect.search import Searcher

    st = statuses(root)
    searchable = {k for k in embedded(root) if st.get(k) == "success"}
    assert searchable
    s = Searcher(root)
    data = BrowseData(root)
    for prompt in PROMPTS:
        hits = cli_search(root, capsys, prompt)
        assert {h["key"] for h in hits} == searchable, prompt
        assert all(st[h["key"]] == "success" for h in hits)
        direct = s.search(s.embed_text(prompt), 5)
        assert len(direct) == 5 and all(st[h["key"]] == "success" for h in direct)
        page = data.query({"q": prompt, "k": "500"})
        assert {r["key"] for r in page["results"]} == searchable
        assert all(st[r["key"]] == "success" and r["status"] == "success" for r in page["results"])
        dropped = data.query({"q": prompt, "k": "500", "kept": "dropped"})
        assert dropped["results"] == []
    assert s.searchable == len(searchable)


def verify_codes(root) -> tuple[set[str], set[str]]:
    from clipcrawl.pipelines.verify import verify

    rep = verify(str(root), workers=2)
    return {f.code for f in rep.errors}, {f.code for f in rep.findings if f.severity == "note"}


@pytest.mark.parametrize("recut", [("--threshold", "median"), ("--top-fraction", "0.5")])
def test_recut_then_search_verify_index(tmp_path, capsys, recut):
    from clipcrawl.pipelines.inspect.index import build_index

    root = _dataset(tmp_path / "ds")
    score(root, "--threshold", "0.3", "--save-embeddings")
    st = statuses(root)
    first = {k for k, s in st.items() if s == "success"}
    assert "filtered_clip" in st.values() and len(first) >= 12  # the wrong-colour captions
    assert embedded(root) == first
    assert main(["-q", "index", str(root)]) == 0
    assert indexed(root) == first
    assert verify_codes(root)[0] == set()
    assert_search_clean(root, capsys)

    # the re-cut: no --save-embeddings, the embeddings (and a plain index rerun's input) are unchanged
    if recut[1] == "median":
        sims = sorted(pq.read_table(root / "shards" / "00000.parquet").column("clip_similarity").drop_null()
                      .to_pylist() + pq.read_table(root / "shards" / "00001.parquet").column("clip_similarity")
                      .drop_null().to_pylist())
        recut = (recut[0], f"{sims[len(sims) * 3 // 4]:.6f}")
    score(root, *recut)
    st = statuses(root)
    now = {k for k, s in st.items() if s == "success"}
    stale = indexed(root) - now
    assert stale and all(st[k] == "filtered_clip" for k in stale)  # the reported state: dropped rows indexed
    assert_search_clean(root, capsys)  # filtered at query time
    errors, _ = verify_codes(root)
    assert "index-stale" in errors
    assert main(["-q", "verify", str(root)]) == 1

    rep = build_index(str(root))
    assert rep.action == "refilled" and rep.dropped == len(stale)
    assert rep.ntotal == len(now & first) and rep.missing == len(now - first)  # a top fraction may take back
    assert indexed(root) == now & first  # rows the first threshold dropped (they have no vector)
    state = json.loads((root / "index" / "index.json").read_text())
    assert state["ntotal"] == len(now & first) and [p["start"] for p in state["parts"]] == [0, state["parts"][0]["rows"]]
    assert verify_codes(root)[0] == set()
    assert_search_clean(root, capsys)
    assert build_index(str(root)).action == "unchanged"

    # a re-cut that keeps more: rows the first threshold dropped have no vector (reported, not searchable)
    score(root, "--threshold", "-1")
    st = statuses(root)
    assert set(st.values()) == {"success"}
    assert verify_codes(root)[0] == {"index-stale"}  # kept rows with a vector are missing from the index
    rep = build_index(str(root))
    assert rep.action == "refilled" and rep.ntotal == len(first) and rep.missing == len(st) - len(first)
    assert verify_codes(root)[0] == set()
    assert_search_clean(root, capsys)


def test_dedup_then_search_verify_index(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    score(root, "--threshold", "-1", "--save-embeddings")
    assert set(statuses(root).values()) == {"success"}
    assert main(["-q", "index", str(root)]) == 0
    assert verify_codes(root)[0] == set()

    assert main(["-q", "dedup", str(root), "--no-semantic"]) == 0
    st = statuses(root)
    dups = {k for k, s in st.items() if s == "duplicate"}
    assert dups >= {f"00001{j:04d}" for j in range(DUPES)}  # the planted copies
    assert dups <= indexed(root)
    assert_search_clean(root, capsys)
    errors, _ = verify_codes(root)
    assert "index-stale" in errors

    assert main(["-q", "index", str(root)]) == 0
    assert indexed(root) == {k for k, s in st.items() if s == "success"}
    assert verify_codes(root)[0] == set()
    assert_search_clean(root, capsys)


def test_search_without_index_filters_dropped(tmp_path, capsys):
    """No index: the exact search over embeddings/ (which keeps dropped rows' vectors) filters too."""
    root = _dataset(tmp_path / "ds")
    score(root, "--threshold", "-1", "--save-embeddings")
    score(root, "--top-fraction", "0.4")
    st = statuses(root)
    assert embedded(root) - {k for k, s in st.items() if s == "success"}
    assert_search_clean(root, capsys)
    assert verify_codes(root)[0] == set()  # no index: the kept dropped rows' vectors are a note only


def test_new_parts_not_indexed_are_a_note(tmp_path, capsys):
    """Shards scored after the last index: a note (rerun index), not a stale index."""
    import shutil

    root = _dataset(tmp_path / "ds")
    moved = tmp_path / "later"
    moved.mkdir()
    for f in (root / "shards").glob("00001*"):
        shutil.move(str(f), moved / f.name)
    score(root, "--threshold", "-1", "--save-embeddings")
    assert main(["-q", "index", str(root)]) == 0
    for f in moved.iterdir():
        shutil.move(str(f), root / "shards" / f.name)
    score(root, "--threshold", "-1", "--save-embeddings")
    errors, notes = verify_codes(root)
    assert errors == set() and "index-behind" in notes
    st = statuses(root)
    hits = cli_search(root, capsys, PROMPTS[0])
    assert hits and {h["key"] for h in hits} == {k for k in indexed(root)} and all(st[h["key"]] == "success"
                                                                                  for h in hits)
    assert main(["-q", "index", str(root)]) == 0
    assert verify_codes(root) == (set(), {"manifest-missing"})
    assert_search_clean(root, capsys)
