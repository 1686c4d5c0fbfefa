"""``clipcrawl run``: incremental runs, the lock, and crash safety (kill -9 at several points).

Every run here crawls the bundled demo site on a loopback port, downloads, scores with the
shipped tiny CLIP, deduplicates and writes shards, through the real CLI in a subprocess where a
process has to die.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from clipcrawl.base.shardfiles import list_shards
from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent
from clipcrawl.pipelines.lock import RunLock
from tests.verify_helpers import assert_verified

pytestmark = [pytest.mark.slow, pytest.mark.network]


def write_config(path: Path, dataset: Path, site_url: str, **extra) -> Path:
    loopback = ["127.0.0.0/8"]
    cfg = {
        "dataset": str(dataset),
        "sources": {"crawl": {"seeds": [site_url], "allowed_networks": loopback, "max_pages": 100}},
        "download": {"image_size": 64, "allowed_networks": loopback, "workers": 1},
        "filters": {"clip": {"model": "tiny", "pretrained": None, "threshold": 0.4, "precision": "fp32",
                             "batch_size": 16}},
        "output": {"samples_per_shard": 8},
        "log_format": "text",
    }
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    path.write_text(yaml.safe_dump(cfg))
    return path


def clipcrawl(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipcrawl", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def samples(dataset: Path) -> dict[str, str]:
    """key -> status over every shard's Parquet (the whole dataset, kept or not)."""
    out: dict[str, str] = {}
    for ref in list_shards(str(dataset)):
        t = pq.read_table(ref.parquet, columns=["key", "status"])
        for k, s in zip(t.column("key").to_pylist(), t.column("status").to_pylist()):
            assert k not in out, f"key {k} appears in two shards"
            out[k] = s
    return out


def assert_readable(dataset: Path) -> None:
    """Readers never see partial files: every visible shard file is complete."""
    for p in (dataset / "shards").glob("*"):
        if p.name.startswith("."):
            continue
        if p.suffix == ".tar":
            with tarfile.open(p) as t:
                t.getmembers()
        elif p.suffix == ".parquet":
            pq.read_table(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())


@pytest.fixture(scope="module")
def site():
    with DemoSite(DemoSiteContent(seed=11, n_images=16)) as s:
        yield s


@pytest.fixture(scope="module")
def reference(site, tmp_path_factory) -> dict[str, str]:
    """An uninterrupted run: the dataset every interrupted one must end up equal to."""
    d = tmp_path_factory.mktemp("ref")
    cfg = write_config(d / "run.yaml", d / "ds", site.url)
    r = clipcrawl("run", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    got = samples(d / "ds")
    assert got and "success" in got.values() and "duplicate" in got.values()
    return got


#: Crash points in pipeline order; each run of the chain dies at the next one (a real SIGKILL).
CRASH_CHAIN = ["crawl.page:4", "run.planned", "stage.download:2", "stage.clip:1", "shard.before_stats:2",
               "publish.before_manifest"]


def test_kill9_chain_then_rerun_equals_uninterrupted(site, reference, tmp_path):
    """kill -9 during the crawl, after planning, during download, during scoring, during a shard
    write and before the manifest commit: one crash after another on the same dataset. Each restart
    resumes; the last one finishes, and the dataset equals the uninterrupted run's."""
    ds = tmp_path / "ds"
    cfg = write_config(tmp_path / "run.yaml", ds, site.url)
    for point in CRASH_CHAIN:
        r = clipcrawl("run", str(cfg), env={"CLIPCRAWL_FAILPOINT": point})
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])
        assert_readable(ds)
        state = json.loads((ds / "runs" / "0001" / "run.json").read_text())
        assert state["state"] != "done", point
    r = clipcrawl("run", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    assert samples(ds) == reference
    state = json.loads((ds / "runs" / "0001" / "run.json").read_text())
    assert state["state"] == "done" and not (ds / "runs" / "0002").exists()
    manifest = json.loads((ds / "manifest.json").read_text())
    assert manifest["totals"]["samples_kept"] == sum(s == "success" for s in reference.values())
    assert not list(ds.rglob(".*.tmp-*"))
    # a run after a finished run starts run 2 and, with nothing new, adds nothing
    r = clipcrawl("run", str(cfg))
    assert r.returncode == 0 and samples(ds) == reference
    assert_verified(ds)


def test_incremental_runs_add_only_new_pairs(tmp_path):
    content = DemoSiteContent(seed=5, n_images=8)
    with DemoSite(content) as site:
        # revisit every page on each run, so pages that gained links are seen again
        cfg = write_config(tmp_path / "run.yaml", tmp_path / "ds", site.url,
                           sources={"crawl": {"seeds": [site.url], "allowed_networks": ["127.0.0.0/8"],
                                              "max_pages": 100, "revisit_after_days": 1e-9}})
        r = clipcrawl("run", str(cfg))
        assert r.returncode == 0, r.stderr[-3000:]
        first = samples(tmp_path / "ds")
        new_paths = content.add_gallery(5)
        r = clipcrawl("run", str(cfg))
        assert r.returncode == 0, r.stderr[-3000:]
        both = samples(tmp_path / "ds")
    added = {k: s for k, s in both.items() if k not in first}
    assert set(first) <= set(both)
    assert len(added) == len(new_paths)  # exactly the new pairs, no key twice (samples() asserts it)
    runs = json.loads((tmp_path / "ds" / "manifest.json").read_text())["runs"]
    assert [r["run"] for r in runs] == [1, 2]
    assert runs[1]["samples_total"] == len(new_paths)
    runs_of_added = set()
    for ref in list_shards(str(tmp_path / "ds")):
        t = pq.read_table(ref.parquet, columns=["key", "run"])
        runs_of_added |= {r for k, r in zip(t.column("key").to_pylist(), t.column("run").to_pylist()) if k in added}
    assert runs_of_added == {2}
    assert_verified(tmp_path / "ds")


def test_lock_held_exits_3_and_changes_nothing(site, tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    cfg = write_config(tmp_path / "run.yaml", ds, site.url)
    with RunLock(str(ds)):
        before = sorted(p.name for p in ds.rglob("*"))
        r = clipcrawl("run", str(cfg))
        assert r.returncode == 3, r.stderr[-2000:]
        assert "another run holds" in r.stderr
        assert sorted(p.name for p in ds.rglob("*")) == before


def test_stale_lock_of_dead_pid_is_taken_over(site, tmp_path, reference):
    ds = tmp_path / "ds"
    ds.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (ds / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "then"}))
    cfg = write_config(tmp_path / "run.yaml", ds, site.url)
    r = clipcrawl("run", str(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    assert samples(ds) == reference
    assert_verified(ds)


def test_unusable_config_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: x\nsources: {crawl: {seeds: [ftp://nope]}}\ndownlaod: {}\n")
    r = clipcrawl("run", str(bad))
    assert r.returncode == 2
    assert "bad.yaml" in r.stderr and "downlaod" in r.stderr and "sources.crawl.seeds" in r.stderr


def test_run_with_top_fraction_curates_the_whole_dataset(site, tmp_path):
    """`run` with a dataset-wide rule: after the shards are written, the top 50% by score stay (ranked over every
    shard), published samples/ and the manifest follow, and curation.json records the rule."""
    cfg = write_config(tmp_path / "run.yaml", tmp_path / "ds", site.url,
                       filters={"clip": {"model": "tiny", "pretrained": None, "threshold": -1, "precision": "fp32",
                                         "batch_size": 16, "top_fraction": 0.5}})
    r = clipcrawl("run", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [row for ref in list_shards(str(tmp_path / "ds"))
            for row in pq.read_table(ref.parquet, columns=["key", "status", "clip_similarity",
                                                            "language"]).to_pylist()]
    cand = sorted((r_["clip_similarity"], r_["key"]) for r_ in rows
                  if r_["status"] in ("success", "filtered_clip") and r_["clip_similarity"] is not None)
    kept = {r_["key"] for r_ in rows if r_["status"] == "success"}
    assert kept == {k for _, k in cand[len(cand) // 2:]}
    assert all(r_["language"] for r_ in rows if r_["status"] == "success")
    doc = json.loads((tmp_path / "ds" / "curation.json").read_text())
    assert doc["status_counts"]["success"] == len(kept)
    published = pq.read_table(tmp_path / "ds" / "samples").num_rows
    assert published == len(kept)


def test_kill9_while_publishing_a_work_file_then_rerun_equals_uninterrupted(site, reference, tmp_path):
    """The driver streams a shard's work file into the shard files batch by batch: killed after a batch of
    shard 2 went into its (temporary) tar, the work file is intact and the next run publishes it again."""
    ds = tmp_path / "ds"
    cfg = write_config(tmp_path / "run.yaml", ds, site.url)
    r = clipcrawl("run", str(cfg), env={"CLIPCRAWL_FAILPOINT": "publish.batch:2"})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    assert_readable(ds)
    work = list((ds / "runs" / "0001" / "work").glob("*.arrow"))
    assert work, "the killed shard's work file must be left for the next run"
    state = json.loads((ds / "runs" / "0001" / "run.json").read_text())
    assert state["state"] == "process" and len(state["published_shards"]) == 1
    r = clipcrawl("run", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "already scored" in r.stderr
    assert samples(ds) == reference
    assert not list(ds.rglob("*.arrow")) and not list(ds.rglob(".*.tmp-*"))
    assert_verified(ds)


def test_run_with_every_seed_refused_fails_with_the_reason(tmp_path):
    """Issue 25: every seed refused (loopback without allowed_networks) -> exit 1, the reason counted on the
    terminal; not 'done' with 0 pairs and exit 0."""
    cfg = write_config(tmp_path / "run.yaml", tmp_path / "ds", "http://127.0.0.1:9/",
                       sources={"crawl": {"seeds": ["http://127.0.0.1:9/", "http://127.0.0.2:9/"],
                                          "allowed_networks": [], "max_pages": 10}})
    r = clipcrawl("run", str(cfg), timeout=120)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert "nothing collected" in out and "blocked_address 2" in out and "allow_private_networks" in out
    st = json.loads((tmp_path / "ds" / "runs" / "0001" / "run.json").read_text())
    assert st["state"] == "done" and "blocked_address 2" in st["error"]


def test_run_refreshes_its_exports(site, tmp_path):
    """``output.exports``: every run leaves the exports equal to the dataset's kept samples; the second run
    (a dedup of its own, a tighter CLIP cut) redoes what changed; an export inside the dataset is exit 2 at
    ``--check``, before anything is written."""
    datasets = pytest.importorskip("datasets")
    from clipcrawl.pipelines.manifest import kept_samples

    out = tmp_path / "hf"
    bad = write_config(tmp_path / "bad.yaml", tmp_path / "ds", site.url,
                       output={"exports": [{"format": "hf", "out": str(tmp_path / "ds" / "hf")}]})
    r = clipcrawl("run", str(bad), "--check")
    assert r.returncode == 2 and "inside the dataset" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "ds").exists()

    def check() -> None:
        want = set(kept_samples(str(tmp_path / "ds")).column("key").to_pylist())
        ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / f"cache-{len(want)}"))
        assert set(ds["key"]) == want and ds.num_rows == len(want)
        assert isinstance(ds.features["image"], datasets.Image)

    cfg = write_config(tmp_path / "run.yaml", tmp_path / "ds", site.url,
                       output={"exports": [{"format": "hf", "out": str(out)}]})
    r = clipcrawl("run", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    check()
    tighter = write_config(tmp_path / "run2.yaml", tmp_path / "ds", site.url,
                           filters={"clip": {"model": "tiny", "pretrained": None, "threshold": 0.4,
                                             "precision": "fp32", "top_fraction": 0.5}},
                           output={"exports": [{"format": "hf", "out": str(out)}]})
    r = clipcrawl("run", str(tighter))
    assert r.returncode == 0, r.stderr[-3000:]
    check()
    assert_verified(tmp_path / "ds")
