"""The partitioned dedup index decides exactly as the single index (P = 1) on planted duplicates."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from clipcrawl.filters.dedup.columns import fingerprints
from clipcrawl.filters.dedup.partitioned import TOP_FILE, PartitionedIndex, open_index
from clipcrawl.filters.dedup.stage import MarkDuplicates
from clipcrawl.filters.dedup.store import DedupIndex
from clipcrawl.schemas.config import DedupConfig

from .helpers import encode, picture, table

D = 16
COLUMNS = ("key", "status", "duplicate_of", "dedup_method", "error_message")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _runs(seed: int = 7) -> list[list[list[dict]]]:
    """3 runs x 2 shards of rows with planted duplicates: exact (URL, bytes, pixels), perceptual
    (resized, cropped), semantic (near embeddings of different pictures), across shards and runs."""
    r = np.random.default_rng(seed)
    n_pics = 18
    pics = [picture(1000 + i) for i in range(n_pics)]
    jpg = [encode(p, quality=90) for p in pics]
    emb = [_unit(r.normal(size=D)) for _ in range(n_pics)]
    rows: list[dict] = []
    for i in range(n_pics):
        rows.append({"url": f"http://x/{i}.jpg", "caption": f"picture {i}", "image": jpg[i], "e": emb[i]})
    for i in range(0, n_pics, 3):  # variants of every third picture
        w, h = pics[i].size
        rows.append({"url": f"http://x/{i}.jpg", "caption": f"picture {i}", "image": jpg[i], "e": emb[i]})  # url
        for m in range(2):  # bytes
            rows.append({"url": f"http://m{m}/{i}.jpg", "caption": "mirror", "image": jpg[i], "e": _unit(r.normal(size=D))})
        png = encode(Image.open(io.BytesIO(jpg[i])).convert("RGB"), "PNG")
        rows.append({"url": f"http://p/{i}.png", "caption": "png", "image": png, "e": _unit(r.normal(size=D))})  # pixels
        rows.append({"url": f"http://s/{i}.jpg", "caption": "small", "e": _unit(r.normal(size=D)),
                     "image": encode(pics[i].resize((w * 3 // 4, h * 3 // 4)), quality=80)})  # resized
        rows.append({"url": f"http://c/{i}.jpg", "caption": "crop", "e": _unit(r.normal(size=D)),
                     "image": encode(pics[i].crop((8, 6, w - 8, h - 6)), quality=85)})  # cropped
    for i in range(0, n_pics, 4):  # semantic: a different picture with a near embedding
        rows.append({"url": f"http://e/{i}.jpg", "caption": "near", "image": encode(picture(5000 + i)),
                     "e": _unit(emb[i] + r.normal(size=D) * 0.05)})
    order = r.permutation(len(rows))
    for i in order:
        rows[i]["clip_similarity"] = float(r.uniform(0.2, 0.4))
        rows[i]["original_width"], rows[i]["original_height"] = 160, 120
    rows = [rows[i] for i in order]
    shards = [rows[s::6] for s in range(6)]
    return [shards[0:2], shards[2:4], shards[4:6]]


def _table(rows: list[dict]):
    return table([{k: v for k, v in row.items() if k != "e"}
                  | {"image_embedding": row["e"], "sha256": hashlib.sha256(row["image"]).hexdigest()} for row in rows])


CONFIGS = [  # run 1 keeps exact-byte copies in the index (sha256/pixels/pHash off): ties for run 2
    DedupConfig(sha256=False, pixels=False, phash=False, semantic_tiny=True),
    DedupConfig(semantic_tiny=True),
    DedupConfig(semantic_tiny=True, phash_crops=True),
]


def _decide(index_dir, partitions: list[int]) -> list[list[tuple]]:
    out = []
    for run, cfg, p in zip(_runs(), CONFIGS, partitions):
        stage = MarkDuplicates(cfg.model_copy(update={"index_dir": str(index_dir), "partitions": p}), sync=False)
        for shard in run:
            t = stage(_table(shard))
            stage.commit()
            out.append(list(zip(*[t.column(c).to_pylist() for c in COLUMNS])))
        stage.close()
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _decide(tmp_path_factory.mktemp("single"), [1, 1, 1])


def test_single_index_finds_the_planted_duplicates(single):
    methods = {m for shard in single for (_, _, _, m, _) in shard if m}
    assert methods == {"url", "sha256", "pixels", "phash", "semantic"}
    messages = [e for shard in single for (*_, e) in shard if e]
    assert any("(published)" in e for e in messages) and any("(earlier batch)" in e for e in messages)


@pytest.mark.slow  # 10-35 s on the shared 2-core box (P x per-range pHash/crop tables of 2^22 entries)
@pytest.mark.parametrize("partitions", [[4, 4, 4], [4, 2, 1]])
def test_partitioned_decisions_equal_single(single, tmp_path, partitions):
    assert _decide(tmp_path, partitions) == single
    if partitions[-1] == 1:  # re-partitioned back to one index: same rows, in order
        assert not (tmp_path / TOP_FILE).exists() and not list(tmp_path.glob("part-*"))


def test_open_index_repartitions_in_order_and_drops_uncommitted_rows(tmp_path):
    fp = fingerprints(_table(_runs()[0][0]))
    single = DedupIndex.open(tmp_path)
    single.add(fp)
    single.note_shards(["00000"])
    single.commit()
    index = open_index(str(tmp_path), 3, "local")
    assert isinstance(index, PartitionedIndex) and len(index) == len(fp) and index.shards == {"00000"}
    assert list(index.all_rows().key) == list(fp.key) and not (tmp_path / "index.json").exists()
    index.add(fp.take(np.arange(5)))
    index.backend.call("commit", [()] * 3)  # partitions committed, then a crash before partitions.json
    index.close()
    again = open_index(str(tmp_path), 3, "local")
    assert len(again) == len(fp) and list(again.all_rows().key) == list(fp.key)
    again.close()
    back = open_index(str(tmp_path), 1)
    assert isinstance(back, DedupIndex) and list(back.committed.key) == list(fp.key)


def test_sync_index_rebuilds_a_partitioned_index(tmp_path):
    from clipcrawl.filters.dedup.rebuild import sync_index

    (tmp_path / "ds" / "shards").mkdir(parents=True)
    index = open_index(str(tmp_path / "idx"), 2, "local")
    index.add(fingerprints(_table(_runs()[0][0])))
    index.note_shards(["00007"])  # a shard the dataset no longer has: rebuilt from the (no) shards
    index.commit()
    assert sync_index(index, str(tmp_path / "ds")) == 0
    assert len(index) == 0 and index.shards == set()
    index.close()


def test_partitions_refuse_a_remote_index_dir():
    """P > 1 keeps its parts on a filesystem: an s3:// index folder is refused with the fix, not half-written."""
    from clipcrawl.filters.dedup.partitioned import open_index
    from clipcrawl.schemas.config import ConfigError

    with pytest.raises(ConfigError, match="dedup.partitions 1"):
        open_index("s3://bucket/dataset/dedup", 4)
