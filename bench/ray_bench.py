"""Scale-out benchmark: ``clipcrawl download`` on the local engine vs a 1-node and a 2-node Ray cluster.

Same input for all: N loopback URLs of photo-like JPEGs (``bench/download_bench.py``'s server), the
same settings (256 px border, jpg q95, ``--samples-per-shard S``, ``--workers 1`` decode process per
engine worker). Two loopback clusters are started side by side (their daemons idle between runs):
``A`` = head 127.0.0.2 (``--num-cpus=1``), ``B`` = head 127.0.0.2 + worker 127.0.0.3 (``--num-cpus=1``
each), and the three configurations run alternately, ``--repeat`` times; medians reported: images/s
(wall, whole command) and CPU ms per image (the command's process tree plus every process of the cluster
it used: raylet, GCS, actors), which the other load of a shared machine disturbs less than wall time.

    python bench/ray_bench.py --n 3000 --repeat 2

On a machine with fewer cores than nodes x actors the 2-node number says only how the scheduler and
the nodes share what cores there are, not how a real second machine would scale.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from download_bench import count_successes, start_server  # noqa: E402

from tests.pipelines.raycluster import DRIVER_ENV, HEAD_IP, RayCluster  # noqa: E402


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def run_measured(cmd: list[str], env: dict[str, str], log: Path, cluster: RayCluster | None) -> tuple[float, int, float]:
    """(wall s, exit code, CPU s): the command's process tree (waited for) plus every process of the Ray
    cluster (actors die at the end of the pass: their CPU time is sampled every 0.1 s while they live)."""
    import resource
    import subprocess
    import time

    base = {p: _cpu(p) for p in cluster.pids()} if cluster else {}
    seen: dict[int, float] = {}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(log, "w") as lf:
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT)
        while p.poll() is None:
            if cluster:
                for pid in cluster.pids():
                    seen[pid] = max(seen.get(pid, 0.0), _cpu(pid))
            time.sleep(0.1)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cluster:
        for pid in cluster.pids():
            seen[pid] = max(seen.get(pid, 0.0), _cpu(pid))
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    cpu += sum(v - base.get(pid, 0.0) for pid, v in seen.items())
    return wall, p.returncode, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--unique", type=int, default=200)
    ap.add_argument("--samples-per-shard", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="raybench-"))
    work.mkdir(parents=True, exist_ok=True)
    server, port = start_server(args.unique)
    urls = work / "urls.txt"
    urls.write_text("".join(f"http://127.0.0.1:{port}/img/{i}.jpg\n" for i in range(args.n)))

    one, two = RayCluster(), RayCluster()
    try:
        assert one.head("--num-cpus=1"), one.error
        assert two.head("--num-cpus=1") and two.worker("127.0.0.3", "--num-cpus=1") and two.wait_nodes(2), two.error
        env = {**os.environ, **DRIVER_ENV, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
        base = [sys.executable, "-m", "clipcrawl", "--log-format", "text", "download", str(urls), "--image-size", "256",
                "--resize-mode", "border", "--encode-quality", "95", "--samples-per-shard", str(args.samples_per_shard),
                "--concurrency", "64", "--per-host-concurrency", "64", "--allow-private-networks", "--workers", "1"]
        configs = {
            "local": ([], None),
            "ray-1-node": (["--engine", "ray", "--ray-address", f"{one.address}@{HEAD_IP}"], one),
            "ray-2-nodes": (["--engine", "ray", "--ray-address", f"{two.address}@{HEAD_IP}"], two),
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in configs}
        for r in range(args.repeat):
            for name, (extra, cluster) in configs.items():
                out = work / f"{name}-{r}"
                shutil.rmtree(out, ignore_errors=True)
                wall, rc, cpu = run_measured([*base, "--out", str(out), *extra], env, work / f"{name}-{r}.log", cluster)
                ok, total = count_successes(out)
                rate = total / wall if wall else 0.0
                cpu_ms = 1000 * cpu / total if total else 0.0
                load = os.getloadavg()[0]
                print(f"{name:12s} run {r}: {wall:6.1f}s {rate:7.1f} img/s {cpu_ms:6.2f} CPU-ms/img  success "
                      f"{ok}/{total} (exit {rc}, load after {load:.1f})", flush=True)
                if rc != 0 or total != args.n:
                    print(f"  see {work / f'{name}-{r}.log'}", flush=True)
                results[name].append((rate, cpu_ms))
    finally:
        server.kill()
        one.stop()
        two.stop()
    med = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    print(json.dumps({"images_per_s": med, "cpu_ms_per_image": cpu,
                      "ray1_over_local": med["ray-1-node"] / med["local"],
                      "ray2_over_ray1": med["ray-2-nodes"] / med["ray-1-node"],
                      "ray1_cpu_over_local": cpu["ray-1-node"] / cpu["local"],
                      "ray2_cpu_over_ray1": cpu["ray-2-nodes"] / cpu["ray-1-node"], "cores": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
