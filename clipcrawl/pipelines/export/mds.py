"""``--format mds``: ``OUT/SHARD/`` written by mosaicml-streaming's ``MDSWriter`` per source shard (its
``index.json`` marks it done), then ``OUT/index.json`` merged as streaming's ``merge_index`` does (shard
basenames prefixed with ``SHARD/``). The writer runs here when ``streaming`` imports, else in one child
process of ``--mds-python`` (:mod:`.mds_child`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import atomic_open, exists, fs_and_path, is_local, remove
from clipcrawl.pipelines.export.sinks import Sink, put_folder
from clipcrawl.pipelines.export.source import Sample, SourcePlan
from clipcrawl.schemas.config import ConfigError
from clipcrawl.schemas.export import IMAGE, mds_encoding, python_value


def _mds_python(explicit: str | None) -> str | None:
    """None: write in this process (``streaming`` imports); else the Python that runs mds_child.py."""
    cand = explicit or os.environ.get("CLIPCRAWL_MDS_PYTHON")
    if cand:
        if os.path.isdir(cand):
            cand = os.path.join(cand, "bin", "python")
        if not os.path.exists(cand):
            raise ConfigError(f"--mds-python {cand}: no such Python")
        return cand
    try:
        import streaming  # noqa: F401
    except ImportError:
        raise ConfigError("--format mds needs mosaicml-streaming (it pins numpy<2.2): pip install "
                          "mosaicml-streaming here, or in a venv of its own and pass --mds-python VENV/bin/python"
                          ) from None
    return None


class MDSSink(Sink):
    name = "mds"

    def __init__(self, out: str, plan: SourcePlan, python: str | None = None, size_limit: str = "64mb") -> None:
        super().__init__(out, plan)
        self.python_opt, self.size_limit = python, size_limit
        self.python: str | None = None
        self.proc: subprocess.Popen | None = None
        self.err: Any = None

    def check(self) -> None:
        self.python = _mds_python(self.python_opt)
        if self.python:
            r = subprocess.run([self.python, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('streaming') "
                                "is None)"], capture_output=True, text=True)
            if r.returncode != 0:
                raise ConfigError(f"--mds-python {self.python}: has no streaming package (pip install "
                                  "mosaicml-streaming into it)")

    @property
    def columns(self) -> dict[str, str]:
        cols = {IMAGE: "bytes"}
        for c in self.plan.columns:
            cols[c] = mds_encoding(self.plan.types[c], c in self.plan.nullable)
        return cols

    def done(self, ref: ShardRef) -> bool:
        return exists(f"{self.out}/{ref.name}/index.json", fresh=True)

    def _rows(self, samples: Iterator[Sample]) -> Iterator[dict]:
        cols = self.columns
        for s in samples:
            row = {IMAGE: s.image}
            for c in self.plan.columns:
                v = s.row.get(c)
                row[c] = python_value(v) if cols[c] == "json" else v
            yield row

    def write(self, ref: ShardRef, samples: Iterator[Sample]) -> int:
        fs, path = fs_and_path(self.out)
        local_out = is_local(fs)
        if local_out:
            os.makedirs(path, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{ref.name}.tmp-", dir=path if local_out else None)
        try:
            shutil.rmtree(tmp)  # MDSWriter wants to create it
            n = self._write_local(tmp, self._rows(samples))
            if local_out:
                final = f"{path}/{ref.name}"
                if os.path.isdir(final):
                    shutil.rmtree(final)
                os.replace(tmp, final)
            else:
                remove(f"{self.out}/{ref.name}", recursive=True)
                put_folder(tmp, f"{self.out}/{ref.name}", last="index.json")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.written += n
        return n

    def _write_local(self, folder: str, rows: Iterator[dict]) -> int:
        if self.python is None:
            from clipcrawl.pipelines.export.mds_child import write_mds

            return write_mds(rows, folder, self.columns, self.size_limit)
        from clipcrawl.pipelines.export.mds_child import frame

        if self.proc is None:  # one child for the whole export
            self.err = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe: a chatty child never blocks us
            script = os.path.join(os.path.dirname(__file__), "mds_child.py")
            self.proc = subprocess.Popen([self.python, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self.err)
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(frame(("open", folder, self.columns, self.size_limit)))
            for row in rows:
                proc.stdin.write(frame(("sample", row)))
            proc.stdin.write(frame(("close",)))
            proc.stdin.flush()
            answer = proc.stdout.readline().decode(errors="replace").strip()
        except BrokenPipeError:
            answer = ""
        if not answer.startswith("ok "):
            self.abort()
            raise RuntimeError(f"MDS writer ({self.python}) failed: {answer or self._stderr()}")
        return int(answer.split()[1])

    def _stderr(self) -> str:
        if getattr(self, "err", None) is None:
            return "no answer"
        self.err.seek(0)
        return self.err.read().decode(errors="replace").strip()[-500:] or "no answer"

    def abort(self) -> None:
        """Stop the child (an interrupt or a failure); what it wrote lies in a temp folder, never published."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if getattr(self, "err", None) is not None:
            self.err.close()
            self.err = None

    def close(self) -> None:
        if self.proc is not None:
            from clipcrawl.pipelines.export.mds_child import frame

            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(frame(("exit",)))
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
            self.abort()

    def finish(self) -> None:
        """``OUT/index.json``: every part's shards, in source-shard order (streaming's merge_index layout)."""
        from clipcrawl.base.storage import read_json

        self.close()
        shards = []
        for ref in self.plan.shards:
            part = read_json(f"{self.out}/{ref.name}/index.json")
            for s in part["shards"]:
                for key in ("raw_data", "zip_data"):
                    if s.get(key):
                        s[key]["basename"] = f"{ref.name}/{s[key]['basename']}"
                shards.append(s)
        with atomic_open(f"{self.out}/index.json", "w") as f:
            json.dump({"version": 2, "shards": shards}, f, sort_keys=True)

    def clear(self) -> None:
        fs, path = fs_and_path(self.out)
        if fs.isdir(path):
            for p in fs.ls(path, detail=False):
                name = p.rstrip("/").rsplit("/", 1)[-1]
                if name.isdigit() or name == "index.json":
                    fs.rm(p, recursive=True)


