"""Exit codes of many short CLI runs: proves no run aborts at exit (issue 14, bug 4). Not in CI.

``terminate called without an active exception`` (SIGABRT, exit 134) after a run printed its
summary: a native thread still running while the interpreter tears down. This script runs the
short runs that showed it, over and over, and counts exit codes:

- ``run``: ``clipcrawl run`` again on a finished dataset (crawl of the loopback demo site, tiny
  CLIP, dedup): it resumes nothing, starts run 2, finds nothing new, exits.
- ``empty``: ``clipcrawl download`` of an empty CSV.
- ``retry``: ``clipcrawl download --retry-failed`` of a finished download whose rows all failed
  (a closed loopback port).

Usage: ``python bench/exit_abort_loop.py --runs 200 --jobs 2`` (prints a table; exit 1 if any run
exited other than 0). Set ``PYTHONPATH`` to the checkout to test.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

#: ``--plain-exit``: the exit path before the fix (``sys.exit(main())``: the interpreter's own
#: finalisation, C++ static destructors included), with the same code otherwise.
PLAIN_EXIT = ["-c", "import sys; from clipcrawl.cli import main; sys.exit(main(sys.argv[1:]))"]
ENTRY = ["-m", "clipcrawl"]


def clipcrawl(*args: str, timeout: float = 300, how: list[str] = ENTRY) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *how, "--log-format", "text", *args],
                          capture_output=True, text=True, timeout=timeout)


def prepare(tmp: Path, site_url: str) -> dict[str, list[str]]:
    tmp.mkdir(parents=True)
    loop = ["127.0.0.0/8"]
    cfg = {"dataset": str(tmp / "ds"),
           "sources": {"crawl": {"seeds": [site_url], "allowed_networks": loop, "max_pages": 100}},
           "download": {"image_size": 64, "allowed_networks": loop, "workers": 1},
           "filters": {"clip": {"model": "tiny", "pretrained": None, "threshold": 0.4, "precision": "fp32"}},
           "output": {"samples_per_shard": 16}, "log_format": "text"}
    (tmp / "run.yaml").write_text(yaml.safe_dump(cfg))
    r = clipcrawl("run", str(tmp / "run.yaml"))
    assert r.returncode == 0, r.stderr[-2000:]
    (tmp / "empty.csv").write_text("url,caption\n")
    (tmp / "dead.csv").write_text("url,caption\n" + "".join(f"http://127.0.0.1:9/{i}.jpg,a thing {i}\n"
                                                            for i in range(20)))
    r = clipcrawl("download", str(tmp / "dead.csv"), "--out", str(tmp / "dead"), "--allow-private-networks")
    assert r.returncode == 0, r.stderr[-2000:]
    return {
        "run": ["run", str(tmp / "run.yaml")],
        "empty": ["download", str(tmp / "empty.csv"), "--out", str(tmp / "empty")],
        "retry": ["download", str(tmp / "dead.csv"), "--out", str(tmp / "dead"), "--allow-private-networks",
                  "--retry-failed"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="total runs (cycled over the kinds)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (different datasets per kind)")
    ap.add_argument("--kinds", default="run,empty,retry")
    ap.add_argument("--plain-exit", action="store_true", help="exit as before the fix (sys.exit(main()))")
    args = ap.parse_args()
    from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent

    kinds = args.kinds.split(",")
    codes: dict[str, collections.Counter] = {k: collections.Counter() for k in kinds}
    samples: list[str] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d, DemoSite(DemoSiteContent(seed=5, n_images=24)) as site:
        # one prepared set per job, so parallel runs never share a dataset (the lock would say 3)
        cmds = [prepare(Path(d) / f"j{j}", site.url) for j in range(args.jobs)]
        print(f"prepared in {time.time() - t0:.0f}s; {args.runs} runs of {kinds}, {args.jobs} at a time", flush=True)

        results: list[tuple[str, int, str]] = []

        def worker(j: int) -> None:  # worker j runs i = j, j + jobs, ... on its own prepared set
            for i in range(j, args.runs, args.jobs):
                kind = kinds[(i // args.jobs) % len(kinds)]
                r = clipcrawl(*cmds[j][kind], how=PLAIN_EXIT if args.plain_exit else ENTRY)
                results.append((kind, r.returncode, r.stderr[-400:]))
                if len(results) % 50 == 0:
                    print(f"  {len(results)} runs, {sum(rc != 0 for _, rc, _ in results)} not 0", flush=True)

        t1 = time.time()
        with ThreadPoolExecutor(args.jobs) as ex:
            list(ex.map(worker, range(args.jobs)))
        for kind, rc, err in results:
            codes[kind][rc] += 1
            if rc != 0:
                samples.append(f"{kind} rc={rc}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    total = collections.Counter()
    for k in kinds:
        total.update(codes[k])
        print(f"{k:6s} {dict(codes[k])}")
    how = "plain sys.exit" if args.plain_exit else "clipcrawl entry"
    print(f"all    {dict(total)} in {time.time() - t1:.0f}s ({how}; {os.environ.get('PYTHONPATH', '')})")
    for s in samples[:10]:
        print("  ", s)
    return 0 if set(total) == {0} else 1


if __name__ == "__main__":
    sys.exit(main())
