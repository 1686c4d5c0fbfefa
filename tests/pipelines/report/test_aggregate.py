"""The report's numbers, recomputed independently from the Parquet files with pandas."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.pipelines.report.aggregate import MAX_CAUSES, aggregate
from clipcrawl.pipelines.report.layout import find_parts
from clipcrawl.schemas.config import ConfigError
from clipcrawl.schemas.keys import sample_key, shard_name
from clipcrawl.schemas.tables import IMG2DATASET_COLUMNS, SAMPLES, conform

ORDER = ["failed_to_download", "failed_to_resize", "filtered_text", "failed_to_score", "filtered_clip", "duplicate"]


def _frame(root: Path) -> pd.DataFrame:
    files = sorted((root / "shards").glob("[0-9]*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_funnel_matches_pandas(demo, demo_agg):
    df = _frame(demo.root)
    total = len(df)
    counts = df["status"].value_counts().to_dict()
    expected = [("samples", total)]
    left = total
    for status, name in zip(ORDER, ["downloaded", "decoded + resized", "passed text rules", "scored by CLIP",
                                    "passed CLIP threshold", "after dedup"]):
        left -= counts.get(status, 0)
        expected.append((name, left))
    expected.append(("written", counts["success"]))
    pages = len(pd.read_parquet(demo.root / "crawl" / "pages"))
    pairs = len(pd.read_parquet(demo.root / "crawl" / "pairs"))
    expected = [("pages crawled", pages), ("pairs found", pairs)] + expected
    got = [(s["step"], s["count"]) for s in demo_agg["funnel"]]
    assert got == expected
    by_step = {s["step"]: s for s in demo_agg["funnel"]}
    assert by_step["written"]["pct"] == round(100 * counts["success"] / total, 2)
    assert by_step["passed CLIP threshold"]["dropped"] == counts["filtered_clip"]
    assert demo_agg["statuses"] == counts


def test_distributions_match_pandas(demo, demo_agg):
    df = _frame(demo.root)
    kept = df["status"] == "success"
    # languages: primary subtag, lower case
    lang = df["page_language"].str.split("-").str[0].str.lower().fillna("unknown")
    assert {r["language"]: r["count"] for r in demo_agg["languages"]["top"]} == lang.value_counts().to_dict()
    assert {r["language"]: r["kept"] for r in demo_agg["languages"]["top"]} == lang[kept].value_counts().to_dict()
    # caption words and characters
    words = df["caption"].str.split().str.len().clip(upper=40)
    assert demo_agg["captions"]["words"]["all"] == [int((words == i).sum()) for i in range(41)]
    chars = (df["caption"].str.len() // 10).clip(upper=30)
    assert demo_agg["captions"]["chars"]["kept"] == [int((chars[kept] == i).sum()) for i in range(31)]
    lens, nwords = df["caption"].str.len(), df["caption"].str.split().str.len()
    for key, series in (("chars_summary", lens), ("words_summary", nwords), ("chars_summary_kept", lens[kept])):
        got = demo_agg["captions"][key]
        assert got["n"] == len(series) and got["mean"] == pytest.approx(series.mean())
        assert (got["p5"], got["median"], got["p95"]) == pytest.approx(tuple(series.quantile([0.05, 0.5, 0.95])))
        assert (got["min"], got["max"]) == (series.min(), series.max())
    # CLIP
    thr = demo.threshold
    assert demo_agg["threshold"] == thr and demo_agg["threshold_source"].endswith("0002/config.yaml")
    assert demo_agg["clip"]["below_threshold"] == int((df["clip_similarity"] < thr).sum())
    assert demo_agg["clip"]["summary"]["n"] == int(df["clip_similarity"].notna().sum())
    h = demo_agg["clip"]["hist"]
    assert sum(h["kept"]) == int((kept & df["clip_similarity"].notna()).sum())
    assert sum(h["filtered_clip"]) == int((df["status"] == "filtered_clip").sum())
    # safety scores
    for col in ("punsafe", "pwatermark"):
        r = demo_agg["safety"][col]
        assert r["n"] == int(df[col].notna().sum())
        assert r["above_0_5"] == int((df[col] > 0.5).sum())
        assert r["mean"] == pytest.approx(df[col].mean(), rel=1e-6)
        assert r["kept_mean"] == pytest.approx(df.loc[kept, col].mean(), rel=1e-6)
    # dedup, image sizes, runs
    dup = df[df["status"] == "duplicate"]["dedup_method"].value_counts().to_dict()
    assert demo_agg["dedup"] == dup
    assert demo_agg["images"]["n"] == int(df["original_width"].notna().sum())
    assert sum(demo_agg["images"]["width"]["all"]) == int(df["original_width"].notna().sum())
    assert demo_agg["images"]["width_summary"]["median"] == pytest.approx(df["original_width"].median())
    for run in demo_agg["runs"]:
        sub = df[df["run"] == int(run["run"])]
        assert run["samples"] == len(sub) and run["kept"] == int((sub["status"] == "success").sum())
        assert run["state"] == "done" and run["duration"] == 1500 and run["manifest_kept"] == run["kept"]
        assert run["run_json_counts"] == sub["status"].value_counts().to_dict()


def test_domains_match_pandas(demo, demo_agg):
    import tldextract

    df = _frame(demo.root)
    ex = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    dom = df["url"].map(lambda u: (lambda r: f"{r.domain}.{r.suffix}")(ex(urlsplit(u).hostname)))
    top = demo_agg["domains"]["top"]
    assert {d["domain"]: d["pairs"] for d in top} == dom.value_counts().to_dict()
    assert {d["domain"]: d["kept"] for d in top} == dom[df["status"] == "success"].value_counts().to_dict()
    assert top[0]["domain"] == "shapes-gallery.com"


def test_host_of():
    from clipcrawl.pipelines.report.sql import host_of

    assert host_of("User:pw@WWW.Example.COM:8080") == "www.example.com"
    assert host_of("[::1]:8080") == "[::1]" and host_of("") == "" and host_of("a.b.") == "a.b"


def test_causes_are_normalised_and_capped(tmp_path):
    rows = []
    for i in range(300):
        url = f"https://h{i}.example.com/img/{i}.jpg"
        msg = f"download: HTTP {400 + i % 5} for {url}" if i % 2 else f"resize: too small ({i}x{i + 1} < 64)"
        rows.append({"url": url, "key": sample_key(url), "status": "failed_to_download" if i % 2 else
                     "failed_to_resize", "error_message": msg})
    for i in range(40):  # 40 causes that do not normalise to one: capped
        url = f"https://x.org/{i}"
        rows.append({"url": url, "key": sample_key(url), "status": "filtered_text",
                     "error_message": f"text_filter: banned word {chr(97 + i % 26) * (1 + i // 26)}"})
    sd = tmp_path / "shards"
    sd.mkdir()
    pq.write_table(conform(pa.Table.from_pylist(rows), SAMPLES), sd / "00000.parquet")
    agg = aggregate(find_parts(tmp_path))
    causes = {(c["status"], c["cause"]): c["count"] for c in agg["causes"]}
    assert causes[("failed_to_download", "download: HTTP N for <url>")] == 150
    assert causes[("failed_to_resize", "resize: too small (NxN < N)")] == 150
    text = [c for c in agg["causes"] if c["status"] == "filtered_text"]
    assert len(text) == MAX_CAUSES + 1
    assert {"status": "filtered_text", "cause": f"(other causes: {40 - MAX_CAUSES})", "count": 40 - MAX_CAUSES,
            "pct": round(100 * (40 - MAX_CAUSES) / 340, 2)} in text
    assert sum(c["count"] for c in text) == 40


def _img2dataset_dir(root: Path, n_shards: int = 2, per: int = 50) -> pd.DataFrame:
    """An img2dataset-style output: only its columns, shards at the top level."""
    frames = []
    for s in range(n_shards):
        rows = []
        for i in range(per):
            url = f"http://img{i % 3}.test/{s}/{i}.jpg"
            ok = i % 4 != 0
            rows.append({"url": url, "caption": f"caption {i}", "key": f"{s:05d}{i:04d}", "status": "success" if ok
                         else "failed_to_download", "error_message": None if ok else f"HTTP {400 + i}",
                         "width": 256 if ok else None, "height": 256 if ok else None,
                         "original_width": 300 + i if ok else None, "original_height": 200 if ok else None,
                         "exif": None, "sha256": f"{i:064x}" if ok else None})
        t = pa.Table.from_pylist(rows).select(list(IMG2DATASET_COLUMNS))
        pq.write_table(t, root / f"{shard_name(s)}.parquet")
        (root / f"{shard_name(s)}_stats.json").write_text(json.dumps(
            {"count": per, "successes": sum(r["status"] == "success" for r in rows), "start_time": 1000.0 + s * 10,
             "end_time": 1010.0 + s * 10, "duration": 10.0, "status_dict": {}}))
        frames.append(t.to_pandas())
    return pd.concat(frames, ignore_index=True)


@pytest.mark.unverified("a hand-made Parquet-only folder for the report")
def test_plain_img2dataset_dir(tmp_path):
    df = _img2dataset_dir(tmp_path)
    agg = aggregate(find_parts(tmp_path), threshold=0.3)
    assert [s["step"] for s in agg["funnel"]] == ["samples", "downloaded", "decoded + resized", "written"]
    assert agg["funnel"][-1]["count"] == int((df["status"] == "success").sum())
    assert "clip_similarity" in agg["columns_missing"]
    assert agg["threshold_source"] == "--threshold" and "hist" not in agg["clip"]
    assert agg["throughput"]["count"] == 100 and agg["throughput"]["active_seconds"] == 20
    assert agg["throughput"]["samples_per_s"] == 5.0
    kept = int((df["status"] == "success").sum())
    assert agg["runs"] == [{"run": "unknown", "samples": 100, "kept": kept,
                            "statuses": {"success": kept, "failed_to_download": 100 - kept}}]


def test_empty_shard_and_missing_dir(tmp_path):
    sd = tmp_path / "shards"
    sd.mkdir()
    pq.write_table(SAMPLES.empty_table(), sd / "00000.parquet")
    agg = aggregate(find_parts(tmp_path))
    assert agg["funnel"][-1] == {"step": "written", "count": 0, "pct": None, "note": None}
    with pytest.raises(ConfigError, match="not a directory"):
        find_parts(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no shards"):
        find_parts(tmp_path / "empty")


def test_crawl_output_only(demo, tmp_path):
    import shutil

    shutil.copytree(demo.root / "crawl", tmp_path / "crawl")
    agg = aggregate(find_parts(tmp_path))
    pages = pd.read_parquet(tmp_path / "crawl" / "pages")
    assert [(s["step"], s["count"]) for s in agg["funnel"]] == [
        ("pages crawled", len(pages)), ("pairs found", len(pd.read_parquet(tmp_path / "crawl" / "pairs")))]
    assert agg["pages"]["by_status"] == pages["status"].value_counts().to_dict()
    assert sum(c["count"] for c in agg["pages"]["causes"]) == int((pages["status"] != "ok").sum())


def test_causes_keep_long_numbers_readable_and_cut_between_words(tmp_path):
    """Issue 25 #8a: pixel counts read as N, not <hex>; a long cause is cut between words, never inside one."""
    rows = []
    for i in range(3):
        url = f"https://h.example.com/{i}.jpg"
        rows.append({"url": url, "key": sample_key(url), "status": "failed_to_resize",
                     "error_message": f"resize: image too large to decode: {20000 + i}x20000 = {400000000 + i} "
                                      "pixels exceeds the 178956970-pixel limit (decompression bomb guard)"})
    sd = tmp_path / "shards"
    sd.mkdir()
    pq.write_table(conform(pa.Table.from_pylist(rows), SAMPLES), sd / "00000.parquet")
    (cause,) = [c["cause"] for c in aggregate(find_parts(tmp_path))["causes"]]
    assert "<hex>" not in cause and "NxN = N pixels exceeds the N-pixel limit" in cause
    words = "resize: image too large to decode: NxN = N pixels exceeds the N-pixel limit (decompression bomb guard)"
    assert cause.endswith(" …") and words.startswith(cause[:-2]) and words[len(cause) - 2] == " "
