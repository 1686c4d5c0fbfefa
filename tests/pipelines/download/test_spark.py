"""img2dataset's ``distributor="pyspark"`` and ``--engine spark`` (issue 30): Spark runs the shards.

img2dataset's ``tests/test_main.py::test_distributors[pyspark]`` shape on a local Spark is in
test_img2dataset_compat.py; here, on a real standalone cluster -- a ``spark://`` master and one worker started
here on loopback from the pyspark package's own jars -- compared with the ``multiprocessing`` run: same keys,
statuses and files. Also, on a SparkContext the caller started (``local[2]``): a Python worker killed mid-shard
is retried (or, out of retries, reported and redone by the next run), ``clipcrawl download --engine spark``
writes what the local engine writes (the driver holding the lock, resuming), dedup and reshard on Spark equal
local; and a machine without Java gets the error saying how to get it (exit 2, nothing written).

Needs pyspark (the ``spark`` extra) and Java 17+; skipped without them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from clipcrawl import img2dataset
from clipcrawl.cli import main as cli_main
from clipcrawl.schemas.config import ConfigError

from .server import make_image
from .test_img2dataset_compat import read_out, write_input

pyspark = pytest.importorskip("pyspark", reason="pyspark not installed (pip install 'clipcrawl[spark]')")


def _java_ok() -> bool:
    from clipcrawl.pipelines.sparkengine import check_java

    try:
        check_java()
    except ConfigError:
        return False
    return True


needs_java = pytest.mark.skipif(not _java_ok(), reason="no Java 17+ (JAVA_HOME or java on PATH) for Spark")

IMAGES = {"a.jpg": (64, 48), "b.jpg": (40, 40), "c.png": (30, 50)}


@pytest.fixture(scope="module")
def url_list(server, tmp_path_factory):
    for name, (w, h) in IMAGES.items():
        server.files[name] = make_image(w, h, "PNG" if name.endswith("png") else "JPEG", seed=w)
    urls = [server.url(f"/f/{n}") for n in IMAGES] + [server.url("/f/missing.jpg")]
    return write_input(tmp_path_factory.mktemp("spark-in"), "txt", [{"url": u} for u in urls * 2])


def _download(url_list: Path, out: Path, **kw):
    """img2dataset's test_distributors call (smaller images and threads: a loopback server)."""
    args = dict(image_size=32, output_folder=str(out), thread_count=8, output_format="webdataset", timeout=10)
    args.update(kw)
    return img2dataset.download(str(url_list), **args)


def _same(a: dict, b: dict) -> None:
    assert a["files"] == b["files"] and a["tars"] == b["tars"]
    assert {k: r["status"] for k, r in a["rows"].items()} == {k: r["status"] for k, r in b["rows"].items()}
    assert {k: r["error_message"] for k, r in a["rows"].items()} == {k: r["error_message"] for k, r in b["rows"].items()}
    assert {n: {k: v for k, v in s.items() if "time" not in k and k != "duration"} for n, s in a["stats"].items()} == \
        {n: {k: v for k, v in s.items() if "time" not in k and k != "duration"} for n, s in b["stats"].items()}


@pytest.fixture(scope="module")
def reference(url_list, tmp_path_factory):
    """The multiprocessing run every Spark run must equal (four shards of two rows)."""
    out = tmp_path_factory.mktemp("spark-ref")
    _download(url_list, out / "four", number_sample_per_shard=2)
    return {"four": read_out(out / "four")}


def test_no_java_says_how_to_get_it(url_list, tmp_path, monkeypatch, capsys):
    """No java on PATH, or a JAVA_HOME without one: exit 2 with how to install Java, nothing written."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        pytest.skip("a SparkContext is running in this process (its JVM is there)")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    out = tmp_path / "out"
    code = cli_main(["img2dataset", f"--url_list={url_list}", f"--output_folder={out}", "--distributor", "pyspark"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "needs Java 17+" in err and "no `java` on PATH" in err and "apt-get install openjdk-17" in err
    assert not out.exists()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nojava"))
    with pytest.raises(ConfigError, match=r"JAVA_HOME=.*nojava has no bin/java"):
        _download(url_list, out, distributor="pyspark")
    assert cli_main(["download", str(url_list), "--out", str(out), "--engine", "spark"]) == 2
    assert not out.exists()


def _rows(folder: Path, columns=("key", "status", "clip_similarity")) -> list[tuple]:
    import pyarrow.parquet as pq

    out = []
    for f in sorted(folder.glob("[0-9]*.parquet")):
        t = pq.read_table(f)
        out += list(zip(*[t.column(c).to_pylist() if c in t.column_names else [None] * t.num_rows for c in columns]))
    return out


class TestRunningContext:
    """A SparkContext the caller started (a notebook's, as img2dataset's pyspark_distributor allows): the
    engine uses it, leaves it running, and its reused Python workers carry nothing from one pass to the next."""

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def notebook(cls):
        from pyspark import SparkConf, SparkContext

        if not _java_ok():
            pytest.skip("no Java 17+ (JAVA_HOME or java on PATH) for Spark")
        saved = os.environ.get("PYSPARK_PYTHON")
        os.environ["PYSPARK_PYTHON"] = sys.executable
        try:
            with warnings.catch_warnings():  # pyspark 4 on pandas 3 (its DataFrame API, not used here)
                warnings.simplefilter("ignore", FutureWarning)
                sc = SparkContext(conf=SparkConf().setMaster("local[2]").setAppName("notebook"))
        finally:
            if saved is None:
                os.environ.pop("PYSPARK_PYTHON")
        yield sc
        assert SparkContext._active_spark_context is sc  # still the caller's: the engine did not stop it
        sc.stop()

    @needs_java
    @pytest.mark.slow
    def test_killed_python_worker_is_retried(self, url_list, reference, tmp_path, monkeypatch):
        """A Python worker SIGKILLed mid-shard fails its Spark task: the shard runs again and the output is whole."""
        monkeypatch.setenv("CLIPCRAWL_FAILPOINT", "stage.download")
        monkeypatch.setenv("CLIPCRAWL_FAILPOINT_ONCE", str(tmp_path / "died"))
        summary = _download(url_list, tmp_path / "out", distributor="pyspark", processes_count=2,
                            number_sample_per_shard=2, max_shard_retry=1)
        assert (tmp_path / "died").exists()  # a worker did die
        assert summary.failures == []
        got = read_out(tmp_path / "out")
        _same(reference["four"], got)
        assert not [f for f in got["files"] if ".tmp" in f]  # the dead worker's temp files are not left as shards

    @needs_java
    @pytest.mark.slow
    def test_shard_out_of_retries_is_reported_then_resumed(self, url_list, reference, tmp_path, monkeypatch):
        """``max_shard_retry=0``: the shard whose worker died is a failure naming the crash, the others are
        written; the same command again (incremental) redoes only that shard and the output is whole."""
        monkeypatch.setenv("CLIPCRAWL_FAILPOINT", "stage.download")
        monkeypatch.setenv("CLIPCRAWL_FAILPOINT_ONCE", str(tmp_path / "died"))
        out = tmp_path / "out"
        summary = _download(url_list, out, distributor="pyspark", number_sample_per_shard=2, max_shard_retry=0)
        assert [f.error for f in summary.failures] == ["spark task failed 1 times: Python worker exited unexpectedly "
                                                       "(crashed)"]
        assert len(read_out(out)["stats"]) == 3
        _download(url_list, out, distributor="pyspark", number_sample_per_shard=2, max_shard_retry=0)
        _same(reference["four"], read_out(out))

    @needs_java
    @pytest.mark.slow
    def test_download_engine_spark_same_as_local_and_resumes(self, url_list, server, tmp_path, monkeypatch):
        """``clipcrawl download --engine spark`` (our shard loop on Spark executors): the local engine's dataset;
        another writer is locked out while the executors work (the driver holds the lock); a shard whose stats
        are gone is redone, the others are skipped."""
        base = ["--input-format", "txt", "--allow-private-networks", "--image-size", "32", "--timeout", "5",
                "--samples-per-shard", "3"]
        assert cli_main(["download", str(url_list), "--out", str(tmp_path / "local"), *base]) == 0
        spark = tmp_path / "spark"
        full = len(server.requests)
        pause = tmp_path / "pause"
        pause.mkdir()
        monkeypatch.setenv("CLIPCRAWL_PAUSE", f"stage.download@{pause}")  # an executor waits there for resume
        second: dict[str, int] = {}

        def second_writer() -> None:  # while an executor holds a shard, the dataset is the driver's
            # (re-entrant within a process, so the other writer is another process)
            deadline = time.monotonic() + 240
            while not (pause / "paused").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            env = {k: v for k, v in os.environ.items() if k != "CLIPCRAWL_PAUSE"}
            second["code"] = subprocess.run([sys.executable, "-m", "clipcrawl", "download", str(url_list), "--out",
                                             str(spark), *base], env=env, capture_output=True, timeout=120).returncode
            (pause / "resume").touch()

        t = threading.Thread(target=second_writer)
        t.start()
        assert cli_main(["download", str(url_list), "--out", str(spark), *base, "--engine", "spark",
                         "--spark-master", "local[2]"]) == 0
        t.join()
        monkeypatch.delenv("CLIPCRAWL_PAUSE")
        assert second == {"code": 3}  # locked
        full = len(server.requests) - full
        a, b = read_out(tmp_path / "local"), read_out(spark)
        assert a["tars"] == b["tars"] and a["files"] == b["files"]
        assert {k: r["status"] for k, r in a["rows"].items()} == {k: r["status"] for k, r in b["rows"].items()}

        def redo_shard_1(out: Path, *engine: str) -> int:
            before = len(server.requests)
            (out / "00001_stats.json").unlink()
            assert cli_main(["download", str(url_list), "--out", str(out), *base, *engine]) == 0
            return len(server.requests) - before

        redone = redo_shard_1(tmp_path / "local")
        assert 0 < redone < full and redo_shard_1(spark, "--engine", "spark", "--spark-master", "local[2]") == redone
        assert read_out(spark)["tars"] == b["tars"]


    @needs_java
    @pytest.mark.slow
    def test_every_pass_on_spark_equals_local(self, tmp_path):
        """dedup and reshard (the shard loop's other passes) with --engine spark give the local output. Score
        runs locally here: on Spark it gives the same scores too, but importing torch in every Python worker
        doubles this test's time on a small machine."""
        from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent

        with DemoSite(DemoSiteContent(seed=5, n_images=12)) as site:
            urls = tmp_path / "urls.csv"
            urls.write_text("url,caption\n" + "".join(f"{site.url}img/{n}.jpg,a picture {i}\n"
                                                      for i, n in enumerate(site.content.images)))
            dl = ["--allow-private-networks", "--ignore-robots", "--image-size", "64", "--samples-per-shard", "5"]
            for name in ("local", "spark"):
                assert cli_main(["download", str(urls), "--out", str(tmp_path / name), *dl]) == 0
        spark = ["--engine", "spark", "--spark-master", "local[2]"]
        for name, extra in (("local", []), ("spark", spark)):
            d = str(tmp_path / name)
            assert cli_main(["score", d, "--model", "tiny", "--precision", "fp32", "--threshold", "0.2"]) == 0
            assert cli_main(["dedup", d, "--no-semantic", *extra]) == 0
            assert cli_main(["reshard", d, "-n", "4", "--out", str(tmp_path / f"{name}-re"), *extra]) == 0
        local, on_spark = _rows(tmp_path / "local"), _rows(tmp_path / "spark")
        assert [r[:2] for r in local] == [r[:2] for r in on_spark]
        assert all(a[2] == b[2] or abs(a[2] - b[2]) < 1e-5 for a, b in zip(local, on_spark) if a[2] is not None)
        assert _rows(tmp_path / "local-re" / "shards", ("key",)) == _rows(tmp_path / "spark-re" / "shards", ("key",))


# ------------------------------------------------------------------ a real standalone cluster on loopback
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="module", autouse=True)
def _cluster(request, tmp_path_factory):
    """A Spark standalone master and one worker (2 cores) on 127.0.0.1, from the pyspark package's jars: started
    with the module's first test when a selected test uses it, so its JVMs boot while the local tests run."""
    home = Path(pyspark.__file__).parent
    spark_class = home / "bin" / "spark-class"
    wanted = any("standalone" in getattr(item, "fixturenames", ()) for item in request.session.items)
    if not (wanted and spark_class.exists() and _java_ok()):
        yield None
        return
    tmp = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOG_DIR": str(tmp), "SPARK_WORKER_DIR": str(tmp / "work")}
    port, ui = _free_port(), _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    try:
        for name, cmd in (("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port",
                                      str(port), "--webui-port", str(ui)]),
                          ("worker", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
                                      "--memory", "2g", "--webui-port", str(_free_port()), "--work-dir",
                                      str(tmp / "work"), master_url])):
            with open(tmp / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen(["bash", str(spark_class), *cmd], stdout=log,
                                              stderr=subprocess.STDOUT, env=env, cwd=tmp))
        yield {"master": master_url, "ui": ui, "work": tmp / "work", "procs": procs, "tmp": tmp}
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.fixture
def standalone(_cluster):
    """The cluster, once its worker has registered with the master."""
    if _cluster is None:
        pytest.skip("no standalone cluster (pyspark without bin/spark-class, or no Java 17+)")
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{_cluster['ui']}/json/", timeout=5) as r:
                if json.load(r).get("aliveworkers", 0) >= 1:
                    return _cluster
        except OSError:
            pass
        if any(p.poll() is not None for p in _cluster["procs"]) or time.monotonic() > deadline:
            logs = "\n".join((_cluster["tmp"] / f"{n}.log").read_text(errors="replace")[-2000:]
                             for n in ("master", "worker"))
            pytest.fail(f"standalone Spark did not come up: {logs}")
        time.sleep(0.5)


@needs_java
@pytest.mark.slow
def test_distributors_pyspark_standalone_cluster(standalone, url_list, reference, tmp_path):
    """``clipcrawl img2dataset --distributor pyspark --spark_master spark://...``: the shards run on the
    standalone worker's executor (a JVM and Python workers of its own) and the output is multiprocessing's."""
    out = tmp_path / "out"
    code = cli_main(["img2dataset", f"--url_list={url_list}", f"--output_folder={out}", "--image_size=32",
                     "--thread_count=8", "--output_format=webdataset", "--number_sample_per_shard=2",
                     "--distributor=pyspark", f"--spark_master={standalone['master']}"])
    assert code == 0
    _same(reference["four"], read_out(out))
    apps = list(standalone["work"].glob("app-*/*/stderr"))
    assert apps, "no executor ran on the standalone worker"

