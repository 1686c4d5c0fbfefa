from __future__ import annotations

import os

import numpy as np
import pytest

from clipcrawl.filters.dedup import MarkDuplicates
from clipcrawl.filters.dedup.evalset import iter_images, load_eval_set
from clipcrawl.pipelines.writer import TarShardWriter
from clipcrawl.schemas.config import ClipConfig, ConfigError, DedupConfig

from .helpers import encode, jpeg, picture, statuses, table

pytest.importorskip("faiss")


def eval_dirs(tmp_path):
    folder = tmp_path / "evalset"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(encode(picture(100), "PNG"))
    (folder / "sub" / "b.jpg").write_bytes(jpeg(101))
    (folder / "notes.txt").write_text("not an image")
    tar = tmp_path / "eval-000.tar"
    with open(tar, "wb") as f:
        w = TarShardWriter(f)
        w.add("k102", {"jpg": jpeg(102), "txt": "x"})
        w.close()
    return str(folder), str(tar)


def test_eval_images_are_named_and_cached(tmp_path):
    folder, tar = eval_dirs(tmp_path)
    assert [n for n, _ in iter_images([folder, tar])] == ["evalset/a.png", "evalset/sub/b.jpg", "eval-000/k102"]
    fp = load_eval_set([folder, tar], None, str(tmp_path / "cache"))
    assert list(fp.key) == ["evalset/a.png", "evalset/sub/b.jpg", "eval-000/k102"] and fp.has_phash.all()
    cached = load_eval_set([folder, tar], None, str(tmp_path / "cache"))
    assert list(cached.key) == list(fp.key) and np.array_equal(cached.phash, fp.phash)
    with pytest.raises(ConfigError):
        load_eval_set([str(tmp_path / "missing")])


def test_near_duplicates_of_eval_images_are_dropped(tmp_path):
    folder, tar = eval_dirs(tmp_path)
    rows = [
        {"url": "http://a/1", "image": encode(picture(100).resize((120, 90)), "JPEG", quality=70)},
        {"url": "http://a/2", "image": jpeg(102, quality=60)},
        {"url": "http://a/3", "image": jpeg(5)},
    ]
    stage = MarkDuplicates(DedupConfig(exclude_near=[folder, tar], index=False))
    out = stage(table(rows))
    assert statuses(out) == ["duplicate", "duplicate", "success"]
    assert out["dedup_method"].to_pylist()[:2] == ["eval_set", "eval_set"]
    assert out["duplicate_of"].to_pylist()[:2] == ["evalset/a.png", "eval-000/k102"]
    assert out["error_message"][0].as_py().startswith("dedup: near-duplicate of evaluation image evalset/a.png")


@pytest.mark.slow
def test_semantic_eval_match_with_tiny_clip(tmp_path):
    pytest.importorskip("open_clip")
    from clipcrawl.filters.dedup.embed import ImageEmbedder

    folder, tar = eval_dirs(tmp_path)
    img = encode(picture(101).resize((100, 75)), "JPEG", quality=70)
    emb = ImageEmbedder("tiny", None, "cpu").embed([img])
    rows = [{"url": "http://a/1", "image": img, "image_embedding": list(emb.emb[0]), "clip_model": emb.model}]
    cfg = DedupConfig(exclude_near=[folder], index=False, phash=False, eval_semantic_threshold=0.9)
    out = MarkDuplicates(cfg, None, ClipConfig(model="tiny", pretrained=None, device="cpu"))(table(rows))
    assert out["dedup_method"][0].as_py() == "eval_set" and "CLIP cosine" in out["error_message"][0].as_py()
    assert os.path.isdir(folder)
