"""``output_format: parquet`` keeps the images in the shard's Parquet: a pass that drops rows afterwards (dataset-wide
curation, dedup, a CLIP re-cut) must leave the image column holding exactly the ``success`` rows' images, as the
writer does, and keep the dropped ones where a later decision can bring them back (``shards/dropped/``, as for
tar shards). Found with ``download --output-format parquet --preset laion400m``: verify reported every filtered
row still holding its image."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clipcrawl.base.shardfiles import ShardRef, iter_tar
from clipcrawl.pipelines.passes.curate import curate_shards
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas import sample_key
from clipcrawl.schemas.components import FiltersConfig
from tests.verify_helpers import assert_verified


def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, "JPEG")
    return buf.getvalue()


COLORS = ["red", "blue", "green", "yellow", "white", "black"]
CAPTIONS = [f"a {c} square on a table" for c in COLORS]
SIDES = [100, 20, 60, 40, 200, 80]  # the original smaller side (the image rule min_side decides on it)


def _dataset(root) -> dict[str, bytes]:
    urls = [f"http://example.com/{i}.jpg" for i in range(len(COLORS))]
    images = [_jpeg(c) for c in COLORS]
    keys = [sample_key(u, c) for u, c in zip(urls, CAPTIONS)]
    table = pa.table({"url": urls, "caption": CAPTIONS, "key": keys, "status": ["success"] * len(urls),
                      "error_message": [None] * len(urls), "image": images, "width": [16] * len(urls),
                      "original_width": SIDES, "original_height": SIDES})
    for shard, rows in ((0, slice(0, 3)), (1, slice(3, 6))):
        write_shard(ShardRef.of(str(root), shard), table.slice(rows.start, rows.stop - rows.start),
                    output_format="parquet")
    return dict(zip(keys, images))


def _rows(root) -> dict[str, tuple[str, bytes | None]]:
    out = {}
    for f in sorted(root.glob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            out[r["key"]] = (r["status"], r["jpg"])
    return out


def _dropped(root) -> dict[str, bytes]:
    return {s["__key__"]: s["jpg"] for f in sorted((root / "dropped").glob("*.tar")) for s in iter_tar(str(f))}


def test_curation_moves_dropped_images_out_of_the_parquet_and_back(tmp_path):
    root = tmp_path / "pq"
    original = _dataset(root)
    strict = FiltersConfig.model_validate({"image": {"min_side": 70}})
    curate_shards(str(root), strict)
    rows = _rows(root)
    dropped = {k for k, (s, _) in rows.items() if s != "success"}
    assert len(dropped) == 3  # sides 20, 60 and 40
    for k, (s, img) in rows.items():
        assert (img is None) == (s != "success"), (k, s)
        if img is not None:
            assert img == original[k]
    assert _dropped(root) == {k: original[k] for k in dropped}  # kept for a later decision, bytes unchanged
    assert_verified(root)

    lax = FiltersConfig.model_validate({"image": {"min_side": 50}})  # side 60 comes back
    curate_shards(str(root), lax)
    rows = _rows(root)
    back = next(k for k in original if rows[k][0] == "success" and k in dropped)
    assert rows[back][1] == original[back]
    assert set(_dropped(root)) == dropped - {back}
    assert_verified(root)

    curate_shards(str(root), FiltersConfig())  # no image rule: everything with an image is a sample again
    rows = _rows(root)
    assert all(s == "success" and rows[k][1] == original[k] for k, (s, _) in rows.items())
    assert not _dropped(root) and not list((root / "dropped").glob("*.tar"))
    assert_verified(root)


def test_curation_reads_no_image_bytes_into_the_decision(tmp_path, monkeypatch):
    """The decision reads every shard's rows at once: without the image column (memory), which the rewrite
    reads back shard by shard."""
    from clipcrawl.pipelines.passes import rewrite

    root = tmp_path / "pq"
    _dataset(root)
    seen = []
    real = rewrite.ReadShards.read

    def spy(self, ref):
        t = real(self, ref)
        seen.append(t.column_names)
        return t

    monkeypatch.setattr(rewrite.ReadShards, "read", spy)
    curate_shards(str(root), FiltersConfig.model_validate({"image": {"min_side": 70}}))
    assert seen and all("jpg" not in names for names in seen)
    assert_verified(root)


def test_score_cut_and_recut_keep_the_image_column_in_step(tmp_path):
    """``score --threshold``: rows under it leave the image column for ``dropped/``; a lower threshold (a re-cut,
    nothing rescored) brings them back, bytes unchanged; verify is clean after each."""
    from clipcrawl.cli import main

    root = tmp_path / "pq"
    original = _dataset(root)
    tiny = ["--model", "tiny", "--precision", "fp32"]
    assert main(["score", str(root), *tiny, "--threshold", "1.0"]) in (0, None)  # nothing reaches a cosine of 1
    rows = _rows(root)
    assert all(s == "filtered_clip" and img is None for s, img in rows.values())
    assert _dropped(root) == original
    assert_verified(root)
    assert main(["score", str(root), *tiny, "--threshold", "-1.0"]) in (0, None)
    rows = _rows(root)
    assert all(s == "success" and img == original[k] for k, (s, img) in rows.items())
    assert not _dropped(root)
    assert_verified(root)


def test_score_cut_dedup_then_reshard_in_sequence(tmp_path):
    """The passes after one another on a Parquet-format dataset: score (with embeddings), a dataset-wide cut,
    dedup; verify is clean after each and the image column holds exactly the kept rows' original bytes (read
    with pyarrow and tarfile). reshard reads tar shards only: exit 2 before it writes anything."""
    import tarfile

    from clipcrawl.cli import main

    root = tmp_path / "pq"
    original = _dataset(root)
    tiny = ["--model", "tiny", "--precision", "fp32"]
    steps = [["score", str(root), *tiny, "--threshold", "-1.0", "--save-embeddings"],
             ["score", str(root), *tiny, "--top-fraction", "0.5"],
             ["dedup", str(root)]]
    for argv in steps:
        assert main(argv) in (0, None), argv
        assert_verified(root)
        rows = _rows(root)
        assert all((img == original[k]) if s == "success" else img is None for k, (s, img) in rows.items())
        dropped = {}
        for f in sorted((root / "dropped").glob("*.tar")):
            with tarfile.open(f) as tf:
                dropped.update({m.name.rsplit(".", 1)[0]: tf.extractfile(m).read() for m in tf.getmembers()})
        assert dropped == {k: original[k] for k, (s, _) in rows.items() if s != "success"}
    assert sum(s == "success" for s, _ in _rows(root).values()) == 3  # top 50 % of 6
    assert main(["reshard", str(root), "--out", str(tmp_path / "re"), "--samples-per-shard", "2"]) == 2
    assert not (tmp_path / "re").exists()
