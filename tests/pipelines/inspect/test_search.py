"""Search on the demo dataset with the shipped tiny CLIP: prompts find their shape, an image finds
its own near-duplicates. Ground truth is the image's file name on the demo site
(``/img/<colour>-<shape>-NN.jpg``), never the caption."""

from __future__ import annotations

import io
import json
import re

import pytest
from PIL import Image

from clipcrawl.base.shardfiles import list_shards, read_images

pytestmark = [pytest.mark.slow, pytest.mark.network]

def truth(url: str) -> tuple[str, str]:
    m = re.search(r"/([a-z]+)-([a-z]+)-\d+(?:-copy)?\.\w+$", url)
    assert m, url
    return m.group(1), m.group(2)


def test_prompt_finds_its_shape(searcher, capsys):
    """Every (colour, shape) the demo kept, as the prompt "a <colour> <shape>"."""
    labels = [truth(u) for u in searcher.meta.column("url").to_pylist()]
    combos = sorted(set(labels))
    top1, p5, found5 = [], [], []
    for colour, shape in combos:
        hits = searcher.search(searcher.embed_text(f"a {colour} {shape}"), 5)
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        sims = [h["similarity"] for h in hits]
        assert sims == sorted(sims, reverse=True)
        got = [labels[h["id"]] for h in hits]
        assert [truth(h["url"]) for h in hits] == got  # hits carry their own metadata
        top1.append(got[0] == (colour, shape))
        p5.append(sum(g == (colour, shape) for g in got) / 5)
        found5.append(sum(g == (colour, shape) for g in got) / min(5, labels.count((colour, shape))))
    n = len(combos)
    with capsys.disabled():
        print(f"\n{n} prompts 'a <colour> <shape>' over {len(labels)} kept samples: top-1 right "
              f"{sum(top1) / n:.2f}, precision@5 {sum(p5) / n:.2f}, share of the matching samples in the "
              f"top 5 {sum(found5) / n:.2f}")
    assert n >= 15
    assert sum(top1) / n >= 0.55 and sum(found5) / n >= 0.85  # measured 0.64 and 0.91 (tiny model)
    for prompt, want in (("a red triangle", ("red", "triangle")), ("a black square", ("black", "square"))):
        hits = searcher.search(searcher.embed_text(prompt), 5)
        got = [labels[h["id"]] for h in hits]
        assert got[0] == want and sum(g[1] == want[1] for g in got) >= 4, (prompt, got)


def _perturb(data: bytes, seed: int) -> bytes:
    """A near-duplicate: slightly cropped, resized and re-encoded at low JPEG quality."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        im = im.convert("RGB").crop((2 + seed % 3, 1, w - 2, h - 3)).resize((w * 3 // 4, h * 3 // 4))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=55)
    return buf.getvalue()


def test_image_query_finds_its_near_duplicates(searcher, indexed_demo):
    shard = list_shards(indexed_demo)[0]
    images = read_images(shard)
    keys = sorted(images)[:8]
    assert len(keys) == 8
    for i, key in enumerate(keys):
        hits = searcher.search(searcher.embed_image(_perturb(images[key], i)), 3)
        # the stored vectors come from the int8 fast path, the query from fp32: similarities of a perturbed
        # copy land at 0.84-0.99 with the tiny model
        assert key in [h["key"] for h in hits] and hits[0]["similarity"] > 0.8, (key, hits)
        if hits[0]["key"] != key:
            # a kept mirrored copy may rank first; otherwise the source must be a near tie with the first hit:
            # the demo run is not bit-reproducible (crawl order sets the batches of the dynamic int8 image
            # tower: stored similarities move by ~1e-3, and which mirrored copy is kept changes), and with the
            # tiny model other images of the same colour and shape can edge ahead (seen: 0.838 vs 0.817, and in
            # one CI run 0.878 behind two at 0.955/0.952): the source stays in the top 3 within 0.1 of the first
            sibling = (searcher.vector_of(key) @ searcher.vector_of(hits[0]["key"]).T).item()
            own_hit = next(h for h in hits if h["key"] == key)
            assert sibling > 0.9 or own_hit["similarity"] >= hits[0]["similarity"] - 0.1, (
                key, [(h["key"], h["similarity"]) for h in hits], sibling)
        # the stored vector of a sample finds itself first, at ~1 (fp16 storage)
        own = searcher.search(searcher.vector_of(key), 1)[0]
        assert own["key"] == key and own["similarity"] > 0.999


def test_cli_search_json(indexed_demo, tmp_path, capsys):
    from clipcrawl.cli import main

    capsys.readouterr()
    assert main(["-q", "search", str(indexed_demo), "a black square", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and truth(hits[0]["url"]) == ("black", "square")
    assert set(hits[0]) >= {"rank", "key", "caption", "url", "similarity"}
    shard = list_shards(indexed_demo)[0]
    key, data = sorted(read_images(shard).items())[0]
    (tmp_path / "q.jpg").write_bytes(_perturb(data, 0))
    assert main(["-q", "search", str(indexed_demo), "--image", str(tmp_path / "q.jpg"), "-k", "2", "--json"]) == 0
    assert key in [h["key"] for h in json.loads(capsys.readouterr().out)]
    assert main(["-q", "search", str(indexed_demo)]) == 2  # neither a prompt nor --image


def test_search_without_index_is_exact(demo_dataset, searcher):
    from clipcrawl.pipelines.inspect.search import Searcher

    plain = Searcher(demo_dataset)  # no DATASET/index: exact over the embeddings folder
    assert plain.kind.startswith("exact") and plain.searchable == searcher.searchable == len(searcher)
    q = searcher.embed_text("a yellow star")
    assert [h["key"] for h in plain.search(q, 5)] == [h["key"] for h in searcher.search(q, 5)]
