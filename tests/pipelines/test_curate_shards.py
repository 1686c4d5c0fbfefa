"""curate_shards: dataset-wide rules over finished shards, in place; stats rewritten; re-applicable."""

import json

import pyarrow as pa

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import read_parquet
from clipcrawl.filters.presets import apply_preset
from clipcrawl.pipelines.passes.curate import curate_shards
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.config import FiltersConfig


def _write(root, shard_id, keys, sims, sizes):
    n = len(keys)
    t = pa.table({"url": [f"http://x/{k}.jpg" for k in keys], "caption": [f"a photo of thing {k}" for k in keys],
                  "key": keys, "status": ["success"] * n, "error_message": [None] * n,
                  "original_width": pa.array([s[0] for s in sizes], pa.int32()),
                  "original_height": pa.array([s[1] for s in sizes], pa.int32()),
                  "clip_similarity": pa.array(sims, pa.float32()), "image": [b"\xff\xd8jpeg"] * n})
    write_shard(ShardRef.of(str(root), shard_id), t)


def _statuses(root):
    out = {}
    for name in ("00000", "00001"):
        t = read_parquet(f"{root}/{name}.parquet")
        out.update(zip(t.column("key").to_pylist(), t.column("status").to_pylist()))
    return out


def test_top_fraction_across_shards_then_reapplied(tmp_path):
    _write(tmp_path, 0, ["a", "b", "c"], [0.9, 0.8, 0.7], [(300, 300)] * 3)
    _write(tmp_path, 1, ["d", "e", "f", "g"], [0.6, 0.5, 0.4, 0.3], [(300, 300), (100, 300), (300, 300), (300, 300)])
    s = curate_shards(str(tmp_path), apply_preset(FiltersConfig(), "datacomp-clip-top30"), "datacomp-clip-top30")
    st = _statuses(tmp_path)
    assert [k for k, v in sorted(st.items()) if v == "success"] == ["a", "b", "c"]  # ceil(0.3 * 7) = 3
    assert s.drops_by_rule == {"clip_cut: clip_similarity": 4}
    stats = json.loads((tmp_path / "00001_stats.json").read_text())
    assert stats["successes"] == 0 and stats["filtered_clip"] == 4 and stats["count"] == 4
    doc = json.loads((tmp_path / "curation.json").read_text())
    assert doc["preset"][0].startswith("preset datacomp-clip-top30") and doc["status_counts"]["success"] == 3
    # another rule set, no rescoring: min side 200 and top 60% (ceil(4.2) = 5 of the 7)
    cfg = FiltersConfig(image={"min_side": 200}, clip={"threshold": -1, "top_fraction": 0.6})
    s2 = curate_shards(str(tmp_path), cfg)
    st = _statuses(tmp_path)
    assert [k for k, v in sorted(st.items()) if v == "success"] == ["a", "b", "c", "d"]
    assert st["e"] == "filtered_image" and s2.drops_by_rule["image: smaller side"] == 1
    # the stats report shows the rules and the drops per rule
    import io

    from rich.console import Console

    from clipcrawl.pipelines.report.aggregate import aggregate
    from clipcrawl.pipelines.report.layout import find_parts
    from clipcrawl.pipelines.report.terminal import render

    agg = aggregate(find_parts(tmp_path))
    assert agg["curation"]["drops_by_rule"]["image: smaller side"] == 1
    assert ("passed image rules", 6) in [(f["step"], f["count"]) for f in agg["funnel"]]
    buf = io.StringIO()
    render(agg, console=Console(file=buf, width=100))
    assert "Curation rules" in buf.getvalue() and "image: smaller side" in buf.getvalue()


def test_run_check_shows_the_preset(tmp_path):
    from typer.testing import CliRunner

    from clipcrawl.cli import app

    (tmp_path / "u.txt").write_text("http://127.0.0.1/a.jpg\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"dataset: {tmp_path / 'ds'}\nsources:\n  urls:\n    path: {tmp_path / 'u.txt'}\n"
                   "preset: datacomp-basic\nfilters:\n  text:\n    min_words: 4\n")
    res = CliRunner().invoke(app, ["run", str(cfg), "--check"])
    assert res.exit_code == 0, res.output
    assert "# preset datacomp-basic: DataComp basic filtering" in res.output
    assert "# - original smaller side >= 200 px" in res.output.replace("#   -", "# -")
    assert "min_side: 200" in res.output and "min_words: 4" in res.output  # explicit field wins
    res = CliRunner().invoke(app, ["run", str(cfg), "--check", "--preset", "laion400m"])
    assert "threshold: 0.3" in res.output and "min_bytes: 5000" in res.output
