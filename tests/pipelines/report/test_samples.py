"""Sample grids: which rows are picked, and where their thumbnails come from."""

from __future__ import annotations

import base64
import io

import pandas as pd
from PIL import Image

from clipcrawl.base.shardfiles import read_images
from clipcrawl.pipelines.report.layout import find_parts
from clipcrawl.pipelines.report.samples import pick_samples


def _frame(root):
    return pd.concat([pd.read_parquet(f) for f in sorted((root / "shards").glob("[0-9]*.parquet"))])


def test_ranked_grids_match_pandas(demo, demo_samples):
    df = _frame(demo.root)
    kept = df[df["status"] == "success"].sort_values(["clip_similarity", "key"])
    low = demo_samples["lowest_kept"]
    assert [c["key"] for c in low] == kept["key"].head(len(low)).tolist() and len(low) == 12
    dropped = df[df["status"] == "filtered_clip"].sort_values(["clip_similarity", "key"], ascending=[False, True])
    top = demo_samples["top_dropped_clip"]
    assert [c["key"] for c in top] == dropped["key"].head(len(top)).tolist()
    assert all(c["clip_similarity"] < demo.threshold for c in top)


def test_thumbnails_from_tars(demo, demo_samples):
    rnd = demo_samples["random_kept"]
    assert len(rnd) == 24 and all(c["status"] == "success" for c in rnd)
    assert len({c["shard"] for c in rnd}) <= 3
    for card in rnd + demo_samples["lowest_kept"]:  # every kept sample is in its shard's tar
        assert card["image"].startswith("data:image/jpeg;base64,") and card["image_from"] == f"{card['shard']}.tar"
        im = Image.open(io.BytesIO(base64.b64decode(card["image"].split(",", 1)[1])))
        assert max(im.size) <= 160
    # dropped ones: images only where shards/dropped/NNNNN.tar holds them (shard 00000 in the demo)
    for card in demo_samples["top_dropped_clip"]:
        if card["shard"] == "00000":
            assert card["image"] and card["image_from"] == "dropped/00000.tar"
        else:
            assert card["image"] is None and card["caption"] and card["url"]
    assert {c["shard"] for c in demo_samples["top_dropped_clip"]} >= {"00000"}


def test_without_images_and_seed(demo):
    parts = find_parts(demo.root)
    a = pick_samples(parts, images=False, seed=1)
    assert all(c["image"] is None for cards in a.values() for c in cards)
    assert [c["key"] for c in a["random_kept"]] == [c["key"] for c in pick_samples(parts, images=False, seed=1)
                                                   ["random_kept"]]
    assert [c["key"] for c in a["random_kept"]] != [c["key"] for c in pick_samples(parts, images=False, seed=2)
                                                   ["random_kept"]]


def test_read_images_missing_tar(tmp_path):
    assert read_images(tmp_path / "nope.tar", {"abc"}) == {}
