"""Web-shaped downloader benchmark: clipcrawl vs img2dataset on a simulated web, in one private network namespace.

The simulated web (bench/websim.py has the details and sources): N URLs over N/4 host names (Zipf 0.7), resolved
by a local DNS server (dnslib) that answers every query after 20-200 ms; 3 % of URLs on NXDOMAIN hosts, 2 % on
dead hosts (accept, never answer), 1 % on trickling hosts (body spread over 30 s), 3 % on hosts that answer
429/503 after 3 requests, 4 % 404s; each host with its own time to first byte (median 50 ms); images in the Web
Almanac's format shares (JPEG 43 / PNG 30 / GIF 17 / WebP 10 %) and a web-like size spread (longest side
100-3000 px, median 480). Everything runs inside ``unshare -nm`` (the script re-executes itself there): only
loopback exists, ``/etc/resolv.conf`` is bind-mounted to name the local DNS server, so both tools' resolvers
(glibc for img2dataset, clipcrawl's own) ask it; the DNS server listens on 127.0.0.1:53, the web on :80.

Both tools with ``timeout 10`` and their defaults otherwise, except: img2dataset ``--processes_count 2
--thread_count 32 --output_format webdataset`` (clipcrawl's default output), clipcrawl
``--allow-private-networks`` (the hosts resolve to 127.0.x.y). Reported per run: URL/s and img/s (successes/s)
over the whole command's wall time, CPU-ms per image (user+sys of the tool's process tree / successes), peak
RSS, successes and failures by the host's behaviour, and the tail: the time from 99 % to 100 % of the URLs
done (a URL is done when the server finished its response or saw the client give up, or, never requested, when
its host's robots.txt request was; NXDOMAIN URLs never reach a server and are left out). For clipcrawl also
its image-work floor: decode + resize + encode CPU per image (``resize_image``, one thread, default settings)
over the images it kept, measured in the same run.

img2dataset 1.47 runs from its own venv: ``.venv-img2dataset`` in this checkout (download_bench.py's default)
or next to it (``../.venv-img2dataset``, as in the RESULTS runs), or ``--img2dataset PATH``; create one with
``python -m venv ../.venv-img2dataset && ../.venv-img2dataset/bin/pip install img2dataset==1.47.0``.
Needs root or unprivileged user namespaces (``unshare -rnm``), ``ip`` and dnslib in this venv.

    python bench/web_bench.py --n 12000 --repeat 2
    python bench/web_bench.py --n 2000 --only clipcrawl --tree before=/path/old --tree after=.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from download_bench import count_successes, run_measured  # noqa: E402
from websim import SimServer, World, image_pool, load_pool  # noqa: E402

INSIDE = "CLIPCRAWL_WEB_BENCH_NETNS"
#: img2dataset's own venv, where download_bench.py (this checkout) or the RESULTS runs (next to it) keep it
I2D_CANDIDATES = [REPO / ".venv-img2dataset" / "bin" / "img2dataset",
                  REPO.parent / ".venv-img2dataset" / "bin" / "img2dataset"]
DEFAULT_I2D = next((p for p in I2D_CANDIDATES if p.exists()), I2D_CANDIDATES[-1])


# ------------------------------------------------------------------ the namespace
def reexec_in_namespace() -> int:
    """Run this script again in a new network + mount namespace (root, or a user namespace mapping root)."""
    flags = "-nm" if os.geteuid() == 0 else "-rnm"
    cmd = ["unshare", flags, "--propagation", "private", "--", sys.executable, *sys.argv]
    return subprocess.call(cmd, env={**os.environ, INSIDE: "1"})


def enter_namespace(work: Path) -> None:
    """Inside: loopback up, resolv.conf naming the local DNS server, and nothing but loopback."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    links = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True).stdout
    names = [ln.split(":")[1].strip() for ln in links.splitlines() if ln.strip()]
    if names != ["lo"]:
        raise SystemExit(f"refusing to run: this namespace has interfaces besides lo: {names}")
    resolv = work / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:5 attempts:2\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)


# ------------------------------------------------------------------ per run figures
def url_index(url: str) -> int | None:
    m = re.search(r"/p/(\d+)\.", url or "")
    return int(m.group(1)) if m else None


def statuses(out: Path) -> dict[int, str]:
    """URL index -> status, from the shards' Parquet files (both tools write one per shard)."""
    import pyarrow.parquet as pq

    got: dict[int, str] = {}
    for f in sorted(out.glob("*.parquet")):
        t = pq.read_table(f, columns=["url", "status"])
        for u, s in zip(t.column("url").to_pylist(), t.column("status").to_pylist()):
            i = url_index(u)
            if i is not None:
                got[i] = s
    return got


def tail(world: World, dump: dict, t0: float) -> dict[str, float | int]:
    """When 99 % and 100 % of the server-visible URLs were done (seconds from the tool's start). A URL the tool
    never requested (its host's robots.txt fetch failed: clipcrawl then fails the host's URLs unrequested) counts
    as done when that robots.txt request was."""
    visible = [i for i in range(world.n) if world.kind(i) != "nxdomain"]
    times, unrequested = [], 0
    for i in visible:
        if i in dump["done"]:
            times.append(dump["done"][i][0] - t0)
        elif world.url_host[i] in dump["robots_done"]:
            times.append(dump["robots_done"][world.url_host[i]] - t0)
            unrequested += 1
    times.sort()
    if not times:
        return {"t99_s": 0.0, "t100_s": 0.0, "tail_s": 0.0, "unrequested": unrequested, "unseen": len(visible)}
    t99 = times[max(0, int(0.99 * len(times)) - 1)]
    # the URLs done after t99: host behaviour, request arrival (s after t99; None: never requested), time to done
    late = []
    for i in visible:
        done = dump["done"].get(i)
        if done is not None and done[0] - t0 > t99:
            arr = dump["arrived"].get(i)
            late.append((world.kind(i), None if arr is None else round(arr - t0 - t99, 2), round(done[0] - t0 - t99, 2),
                         done[1]))
    late.sort(key=lambda x: -x[2])
    return {"t50_s": times[len(times) // 2], "t99_s": t99, "t100_s": times[-1], "tail_s": times[-1] - t99,
            "unrequested": unrequested, "unseen": len(visible) - len(times), "late": late[:20]}


def by_kind(world: World, st: dict[int, str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for i in range(world.n):
        k = world.kind(i)
        s = st.get(i, "missing")
        out.setdefault(k, {})
        out[k][s] = out[k].get(s, 0) + 1
    return out


def image_floor(world: World, pool: list[bytes], kept: list[int], tree: str) -> dict[str, float]:
    """clipcrawl's decode + resize + encode CPU per image (default settings, one thread) over ``kept`` URLs."""
    code = r"""
import json, sys, time
from clipcrawl.filters.images import ResizeOptions
from clipcrawl.filters.images.resize import resize_image
from clipcrawl.schemas.config import DownloadConfig
paths = json.loads(sys.stdin.read())
opts = ResizeOptions.from_config(DownloadConfig())
out = {}
for k, p in paths.items():
    data = open(p, "rb").read()
    best = None
    for _ in range(3):
        t = time.thread_time()
        r = resize_image(data, opts)
        best = min(best or 9e9, time.thread_time() - t)
    out[k] = [best, r.error]
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), "OMP_NUM_THREADS": "1"}
    return _floor(world, kept, [sys.executable, "-P", "-c", code], env)


def _floor(world: World, kept: list[int], cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd`` (reads {image id: path} on stdin, prints {image id: [cpu s, error]}) over the images behind the
    ``kept`` URLs; the mean CPU per kept URL."""
    from websim import EXT

    need = sorted({world.url_image[i] for i in kept})
    folder = Path(os.environ["CLIPCRAWL_WEB_BENCH_POOL"])
    paths = {str(k): str(folder / f"{k:05d}.{EXT[world.images[k]['format']]}") for k in need}
    r = subprocess.run(cmd, input=json.dumps(paths), capture_output=True, text=True, env=env, check=True)
    cpu = {int(k): v[0] for k, v in json.loads(r.stdout).items()}
    per_url = [cpu[world.url_image[i]] for i in kept]
    return {"floor_ms_per_image": 1000 * statistics.fmean(per_url) if per_url else 0.0, "images": len(per_url)}


I2D_FLOOR = r"""
import io, json, sys, time
from img2dataset.resizer import Resizer
paths = json.loads(sys.stdin.read())
# img2dataset.download's defaults (main.py): image_size 256, resize_mode border, lanczos up / area down, jpg q95
r = Resizer(image_size=256, resize_mode="border", resize_only_if_bigger=False)
out = {}
for k, p in paths.items():
    data = open(p, "rb").read()
    best = None
    for _ in range(3):
        t = time.thread_time()
        res = r(io.BytesIO(data))
        best = min(best or 9e9, time.thread_time() - t)
    out[k] = [best, res[-1]]
print(json.dumps(out))
"""


def i2d_floor(world: World, kept: list[int], i2d_bin: str) -> dict[str, float]:
    """img2dataset's own image work (its ``Resizer`` with ``download``'s defaults: decode + resize + encode, one
    thread, best of 3 as for clipcrawl's floor) over the URLs it kept, in its venv."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    return _floor(world, kept, [str(Path(i2d_bin).parent / "python"), "-c", I2D_FLOOR], env)


# ------------------------------------------------------------------ main
def run_thread_cpu(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int, int, float, dict[str, float]]:
    """run_measured plus CPU seconds per thread of the main process: /proc/PID/task/TID/stat at every poll (a
    thread's last reading counts), names from ``py-spy dump`` (native tid -> Python thread name), taken again while
    a thread has no name yet (at most every 5 s, 8 times; py-spy's CPU is not counted as the tool's); thread pools'
    numbered names are summed (``decode_0`` + ``decode_1`` -> ``decode``); threads py-spy cannot name (C
    libraries' own, or ended before a dump) count as ``other:<OS thread name>``; ``X (sys)`` is the kernel's part
    of thread X."""
    import resource
    tick = os.sysconf("SC_CLK_TCK")
    last: dict[int, tuple[float, float]] = {}  # tid -> (user + sys, sys) seconds
    comms: dict[int, str] = {}  # the OS thread name (threads py-spy cannot name: C libraries' own)
    names: dict[int, str] = {}
    dumps = {"n": 0, "next": time.monotonic() + 2.0}
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    def poll(pid: int) -> float:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                f = (task / "stat").read_text().rsplit(")", 1)[1].split()
                tid = int(task.name)
                last[tid] = ((int(f[11]) + int(f[12])) / tick, int(f[12]) / tick)
                if tid not in comms:
                    comms[tid] = (task / "comm").read_text().strip()
            except (OSError, ValueError, IndexError):
                continue
        if not set(last) - set(names) or time.monotonic() < dumps["next"] or dumps["n"] >= 8:
            return 0.0
        dumps["n"], dumps["next"] = dumps["n"] + 1, time.monotonic() + 5.0
        d0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([spy, "dump", "--nonblocking", "--pid", str(pid)], capture_output=True, text=True).stdout
        d1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        names.update({int(t): n for t, n in re.findall(r'Thread (\d+) \([a-z]+\): "([^"]*)"', out)})
        return (d1.ru_utime - d0.ru_utime) + (d1.ru_stime - d0.ru_stime)

    wall, peak, rc, cpu = run_measured(cmd, env, log, on_poll=poll)
    threads: dict[str, float] = {}
    for tid, (sec, sys_sec) in last.items():
        n = re.sub(r"_\d+$", "", names.get(tid) or f"other:{comms.get(tid, '?')}")
        threads[n] = threads.get(n, 0.0) + sec
        threads[f"{n} (sys)"] = threads.get(f"{n} (sys)", 0.0) + sys_sec
    threads["(children)"] = max(0.0, cpu - sum(sec for sec, _ in last.values()))
    return wall, peak, rc, cpu, threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12000, help="URLs")
    ap.add_argument("--hosts", type=int, default=None, help="host names (default n / 4)")
    ap.add_argument("--unique", type=int, default=300, help="distinct images behind the URLs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="alternating runs of each tool")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--samples-per-shard", type=int, default=None, help="both tools (default: their 10,000)")
    ap.add_argument("--only", choices=["clipcrawl", "img2dataset"], default=None)
    ap.add_argument("--tree", action="append", default=[],
                    help="NAME=PATH of a clipcrawl checkout to run (repeatable; default clipcrawl=this checkout)")
    ap.add_argument("--clipcrawl-args", default="", help="extra args for clipcrawl download")
    ap.add_argument("--img2dataset", default=str(DEFAULT_I2D))
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="run clipcrawl under py-spy (collapsed stacks, 200 Hz) into DIR/<tool>-<run>.txt")
    ap.add_argument("--thread-cpu", action="store_true",
                    help="clipcrawl: CPU per thread (user+sys from /proc, names from one py-spy dump), ms per kept image")
    ap.add_argument("--share-dead", type=float, default=0.02)
    ap.add_argument("--share-trickle", type=float, default=0.01)
    ap.add_argument("--share-nxdomain", type=float, default=0.03)
    ap.add_argument("--share-ratelimit", type=float, default=0.03)
    ap.add_argument("--share-404", type=float, default=0.04)
    ap.add_argument("--trickle-s", type=float, default=30.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="where to write the results (default WORKDIR/web_bench.json)")
    args = ap.parse_args()
    if os.environ.get(INSIDE) != "1":
        raise SystemExit(reexec_in_namespace())

    work = Path(args.workdir or tempfile.mkdtemp(prefix="webbench-"))
    work.mkdir(parents=True, exist_ok=True)
    enter_namespace(work)
    world = World(n=args.n, hosts=args.hosts or max(1, args.n // 4), seed=args.seed, unique=args.unique,
                  share_dead=args.share_dead, share_trickle=args.share_trickle, share_nxdomain=args.share_nxdomain,
                  share_ratelimit=args.share_ratelimit, share_404=args.share_404, trickle_s=args.trickle_s).build()
    world.save(work / "world.json")
    t = time.monotonic()
    pool_dir = image_pool(world, Path(tempfile.gettempdir()))
    os.environ["CLIPCRAWL_WEB_BENCH_POOL"] = str(pool_dir)
    pool = load_pool(world, pool_dir)
    kinds = world.summary()
    fmt_n: dict[str, int] = {}
    fmt_kb: dict[str, list[float]] = {}
    for i in range(world.n):
        spec = world.images[world.url_image[i]]
        fmt_n[spec["format"]] = fmt_n.get(spec["format"], 0) + 1
        fmt_kb.setdefault(spec["format"], []).append(len(pool[world.url_image[i]]) / 1024)
    longest = sorted(max(s["width"], s["height"]) for s in world.images)
    print(f"world: {world.n} URLs, {len(set(world.url_host))} hosts used of {world.hosts}; "
          + ", ".join(f"{k} {v / world.n:.1%}" for k, v in sorted(kinds.items())), flush=True)
    print(f"images: {len(pool)} distinct (rendered/loaded in {time.monotonic() - t:.0f}s, {pool_dir}); per URL "
          + ", ".join(f"{f} {fmt_n[f] / world.n:.0%} (median {statistics.median(fmt_kb[f]):.0f} KB)" for f in fmt_n)
          + f"; longest side median {longest[len(longest) // 2]} px, "
          f"{sum(x < 800 for x in longest) / len(longest):.0%} under 800, max {longest[-1]}", flush=True)

    server = SimServer(work / "world.json", pool_dir, seed=args.seed)
    try:
        ok_host = next(h for h in range(world.hosts) if world.host_kind.get(h, "ok") == "ok")
        addr = socket.getaddrinfo(world.host_name(ok_host), 80, socket.AF_INET)[0][4][0]
        i0 = next(i for i in range(world.n) if world.kind(i) == "ok")
        body = urllib.request.urlopen(world.url(i0), timeout=10).read()
        print(f"self-check: {world.host_name(ok_host)} -> {addr}, {len(body)} bytes from URL {i0}", flush=True)
        server.call("reset")
        urls = work / "urls.txt"
        urls.write_text("".join(world.url(i) + "\n" for i in range(world.n)))

        per_shard = [] if args.samples_per_shard is None else [str(args.samples_per_shard)]
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
        trees = dict(t.split("=", 1) for t in args.tree) or {"clipcrawl": str(REPO)}
        tools: dict[str, tuple[callable, dict[str, str]]] = {}
        if args.only != "clipcrawl":
            tools["img2dataset"] = (lambda out: [
                args.img2dataset, "--url_list", str(urls), "--input_format", "txt", "--output_folder", str(out),
                "--processes_count", "2", "--thread_count", "32", "--timeout", str(args.timeout),
                "--output_format", "webdataset", "--distributor", "multiprocessing",
                *(["--number_sample_per_shard", *per_shard] if per_shard else [])], env)
        if args.only != "img2dataset":
            for name, path in trees.items():
                tenv = {**env, "PYTHONPATH": str(Path(path).resolve())}
                def prof(out: Path, name: str = name) -> list[str]:
                    """py-spy in front of the command with ``--profile`` (``CLIPCRAWL_PROFILE_GIL=1``: GIL only)."""
                    if not args.profile:
                        return []
                    gil = ["--gil"] if os.environ.get("CLIPCRAWL_PROFILE_GIL") else []
                    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                    dest = Path(args.profile).resolve() / f"{name}-{out.name.rsplit('-', 1)[-1]}.txt"
                    return [spy, "record", "--format", "raw", "-r", "200", "--subprocesses", "--nonblocking", "--threads", *gil,
                            "-o", str(dest), "--"]

                tools[name] = (lambda out, prof=prof: [
                    *prof(out), sys.executable, "-P", "-m", "clipcrawl", "--log-format", "text", "download", str(urls),
                    "--out", str(out), "--allow-private-networks", "--timeout", str(args.timeout),
                    *(["--samples-per-shard", *per_shard] if per_shard else []), *args.clipcrawl_args.split()], tenv)

        runs: list[dict] = []
        for r in range(args.repeat):
            for name, (cmd, tenv) in tools.items():
                out = work / f"{name}-{r}"
                shutil.rmtree(out, ignore_errors=True)
                server.call("reset")
                load = os.getloadavg()[0]
                t0 = time.monotonic()
                threads: dict[str, float] = {}
                if args.thread_cpu and name != "img2dataset":
                    wall, rss, rc, cpu, threads = run_thread_cpu(cmd(out), tenv, work / f"{name}-{r}.log")
                else:
                    wall, rss, rc, cpu = run_measured(cmd(out), tenv, work / f"{name}-{r}.log")
                dump = server.call("dump")
                ok, total = count_successes(out)
                st = statuses(out)
                res = {"tool": name, "run": r, "wall_s": wall, "url_per_s": world.n / wall, "img_per_s": ok / wall,
                       "cpu_s": cpu, "cpu_ms_per_image": 1000 * cpu / ok if ok else 0.0,
                       "cpu_ms_per_url": 1000 * cpu / world.n, "peak_rss_mib": rss / 2**20, "exit": rc,
                       "successes": ok, "rows": total, "load_at_start": load, "requests": dump["requests"],
                       "robots_requests": dump["robots"], "dns_queries": dump["dns_queries"],
                       "http_requests": dump.get("http_total"),
                       **tail(world, dump, t0), "by_kind": by_kind(world, st)}
                if threads:
                    res["thread_cpu_ms_per_image"] = {k: 1000 * v / max(ok, 1) for k, v in threads.items()}
                    print("  CPU ms per kept image by thread: " + ", ".join(
                        f"{k} {v:.3f}" for k, v in sorted(res["thread_cpu_ms_per_image"].items(), key=lambda kv: -kv[1])),
                        flush=True)
                kept = [i for i, s in st.items() if s == "success"]
                if name != "img2dataset":
                    res.update(image_floor(world, pool, kept, trees[name]))
                else:
                    res.update(i2d_floor(world, kept, args.img2dataset))
                runs.append(res)
                floor = (f", floor {res['floor_ms_per_image']:.2f} ms/img" if "floor_ms_per_image" in res else "")
                print(f"{name:12s} run {r}: {wall:6.1f}s {res['url_per_s']:6.1f} URL/s {res['img_per_s']:6.1f} img/s "
                      f"{res['cpu_ms_per_image']:6.2f} CPU-ms/img{floor}  success {ok}/{total}  "
                      f"99->100% {res['tail_s']:5.1f}s (t99 {res['t99_s']:.1f}s)  RSS {res['peak_rss_mib']:.0f} MiB  "
                      f"DNS queries {res['dns_queries']}  HTTP requests {res['http_requests']}  exit {rc}  load {load:.1f}", flush=True)
                if res.get("late"):
                    print("  last URLs (host kind, request arrived s after t99, done s after t99, outcome): "
                          + "; ".join(f"{k} {a} {d} {o}" for k, a, d, o in res["late"][:6]), flush=True)
                if rc != 0 or total != world.n:
                    print(f"  see {work / f'{name}-{r}.log'}", flush=True)
    finally:
        server.stop()

    names = list(dict.fromkeys(r["tool"] for r in runs))
    print("\n| tool | URL/s | img/s | CPU-ms/img | floor ms/img | successes | 99->100 % s | wall s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, dict] = {}
    for name in names:
        rs = [r for r in runs if r["tool"] == name]
        med = {k: statistics.median(r[k] for r in rs) for k in
               ("url_per_s", "img_per_s", "cpu_ms_per_image", "successes", "tail_s", "wall_s", "peak_rss_mib")}
        if "floor_ms_per_image" in rs[0]:
            med["floor_ms_per_image"] = statistics.median(r["floor_ms_per_image"] for r in rs)
        summary[name] = med
        floor = f"{med['floor_ms_per_image']:.2f}" if "floor_ms_per_image" in med else "-"
        print(f"| {name} | {med['url_per_s']:.1f} | {med['img_per_s']:.1f} | {med['cpu_ms_per_image']:.2f} | {floor} "
              f"| {med['successes']:.0f} | {med['tail_s']:.1f} | {med['wall_s']:.1f} | {med['peak_rss_mib']:.0f} |")
    print("\nstatus by host behaviour (first run of each tool):")
    for name in names:
        r0 = next(r for r in runs if r["tool"] == name)
        print(f"  {name}: " + "; ".join(f"{k}: " + ", ".join(f"{s} {c}" for s, c in sorted(v.items()))
                                        for k, v in sorted(r0["by_kind"].items())))
    result = {"world": {"n": world.n, "hosts": world.hosts, "seed": world.seed, "unique": world.unique,
                        "kinds": kinds, "formats": fmt_n}, "runs": runs, "median": summary}
    path = Path(args.json) if args.json else work / "web_bench.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
