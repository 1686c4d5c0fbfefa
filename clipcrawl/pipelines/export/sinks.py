"""The per-format writers of ``clipcrawl export``: each takes one input shard's kept samples at a time.

A sink has ``check()`` (before the first write: exit 2 when it cannot work), ``done(ref)`` (the shard's
part is complete in OUT: skipped on a rerun), ``write(ref, samples)`` (one part, published atomically) and
``finish(plan)`` (the top-level index or card, written last). Every file goes through fsspec
(:func:`atomic_open` / ``put``), so OUT may be a local folder or any fsspec URL (``s3://...``).

- **hf**: ``OUT/data/train-SHARD.parquet`` (row groups of 256 rows, streamed) + ``OUT/README.md``.
- **mds**: ``OUT/SHARD/`` written by ``MDSWriter`` (its ``index.json`` marks it done), then
  ``OUT/index.json`` merged as streaming's ``merge_index`` does (shard basenames prefixed with ``SHARD/``).
- **litdata**: one ``BinaryWriter`` over all shards (its ``data_format`` is fixed by the first sample, so
  parts written separately could disagree); chunks and ``index.json`` are published at the end: a killed
  litdata export is redone from the start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import atomic_open, exists, fs_and_path, is_local, remove
from clipcrawl.pipelines.export.source import Sample, SourcePlan
from clipcrawl.schemas.config import ConfigError
from clipcrawl.schemas.export import HF_IMAGE_TYPE, HF_SPLIT, IMAGE, mds_encoding, needs_json, python_value

ROW_GROUP = 256


def _put_folder(local: str, remote: str, last: str) -> None:
    """Copy the files of a local folder to ``remote`` (any fsspec URL), the file named ``last`` last."""
    names = sorted(os.listdir(local), key=lambda n: (n == last, n))
    for name in names:
        with open(os.path.join(local, name), "rb") as f, atomic_open(f"{remote}/{name}") as g:
            shutil.copyfileobj(f, g, 1 << 20)


class Sink:
    name = ""

    def __init__(self, out: str, plan: SourcePlan) -> None:
        self.out, self.plan = out.rstrip("/"), plan
        self.written = 0

    def check(self) -> None:
        """Exit 2 (ConfigError) when this format cannot be written; nothing is touched yet."""

    def begin(self) -> None:
        """OUT is held and prepared: start writing."""

    def done(self, ref: ShardRef) -> bool:
        return False

    def write(self, ref: ShardRef, samples: Iterator[Sample]) -> int:
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        """Called when the export stops early (an error, Ctrl-C): drop what is not published."""

    def clear(self) -> None:
        """Remove what an earlier export of this format left in OUT (its inputs changed)."""


# ------------------------------------------------------------------ Hugging Face
class HFSink(Sink):
    name = "hf"

    def check(self) -> None:
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise ConfigError("--format hf needs the datasets package (pip install 'clipcrawl[export]')") from None

    def schema(self) -> pa.Schema:
        from datasets import Features, Image

        fields = [pa.field(IMAGE, HF_IMAGE_TYPE)] + [pa.field(c, self.plan.types[c]) for c in self.plan.columns]
        schema = pa.schema(fields)
        features = Features.from_arrow_schema(schema)
        features[IMAGE] = Image()
        self.features = features
        return schema.with_metadata({"huggingface": json.dumps({"info": {"features": features.to_dict()}})})

    def part(self, name: str) -> str:
        return f"{self.out}/data/{HF_SPLIT}-{name}.parquet"

    def done(self, ref: ShardRef) -> bool:
        return exists(self.part(ref.name), fresh=True)

    def write(self, ref: ShardRef | None, samples: Iterator[Sample]) -> int:
        schema = self.schema()
        n = 0
        with atomic_open(self.part(ref.name if ref else "00000")) as f, pq.ParquetWriter(f, schema) as w:
            batch: list[Sample] = []

            def flush() -> None:
                cols: dict[str, Any] = {IMAGE: [{"bytes": s.image, "path": f"{s.row['key']}.{s.ext}"} for s in batch]}
                for c in self.plan.columns:
                    cols[c] = [s.row.get(c) for s in batch]
                w.write_table(pa.table(cols, schema=schema))
                batch.clear()

            for s in samples:
                batch.append(s)
                n += 1
                if len(batch) >= ROW_GROUP:
                    flush()
            if batch:
                flush()  # an empty part: the schema and no row group (datasets reads no batch of 0 rows)
        self.written += n
        return n

    def finish(self) -> None:
        if not self.plan.shards:  # an empty dataset: one empty part, so load_dataset gives 0 typed rows
            self.write(None, iter(()))
        else:
            self.schema()
        import yaml

        try:
            info = {"features": self.features._to_yaml_list()}
        except AttributeError:  # an older/newer datasets without the YAML helper: the Parquet schema suffices
            info = None
        header = {"configs": [{"config_name": "default", "data_files": [
            {"split": HF_SPLIT, "path": f"data/{HF_SPLIT}-*.parquet"}]}]}
        if info:
            header["dataset_info"] = info
        header["task_categories"] = ["zero-shot-image-classification"]
        card = ("---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n"
                f"# Image-text pairs exported by clipcrawl\n\n{self.plan.total} samples, one Parquet file per "
                "source shard in `data/`; the `image` column is a `datasets.Image` feature (encoded bytes).\n\n"
                "```python\nfrom datasets import load_dataset\nds = load_dataset(PATH_OR_REPO, split=\"train\")\n```\n")
        with atomic_open(f"{self.out}/README.md", "w") as f:
            f.write(card)

    def clear(self) -> None:
        remove(f"{self.out}/data", recursive=True)
        remove(f"{self.out}/README.md")


def push_to_hub(out: str, repo: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload the exported folder to a Hugging Face dataset repo with ``huggingface_hub``'s upload."""
    from huggingface_hub import HfApi

    fs, path = fs_and_path(out)
    if not is_local(fs):
        raise ConfigError(f"--push-to-hub uploads a local folder: export to a local --out (not {out}) to push")
    api = HfApi(token=token)
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=path,
                             allow_patterns=["README.md", "data/*.parquet"],
                             commit_message="clipcrawl export --format hf")
    return str(getattr(info, "commit_url", info))


# ------------------------------------------------------------------ MosaicML MDS
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
                _put_folder(tmp, f"{self.out}/{ref.name}", last="index.json")
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


# ------------------------------------------------------------------ LitData
class LitDataSink(Sink):
    """All shards through one litdata ``BinaryWriter`` into a local folder, published at :meth:`finish`."""

    name = "litdata"

    def __init__(self, out: str, plan: SourcePlan, chunk_bytes: str = "64MB") -> None:
        super().__init__(out, plan)
        self.chunk_bytes = chunk_bytes
        self.writer: Any = None
        self.index = 0

    def check(self) -> None:
        try:
            import litdata  # noqa: F401
        except ImportError:
            raise ConfigError("--format litdata needs litdata (pip install 'clipcrawl[export]')") from None

    def begin(self) -> None:
        fs, path = fs_and_path(self.out)
        self.local_out = is_local(fs)
        self.complete = exists(f"{self.out}/index.json", fresh=True)  # an earlier run of the same record finished
        if self.complete:
            return
        base = path if self.local_out else None
        if base:
            os.makedirs(base, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=".litdata.tmp-", dir=base)
        from litdata.streaming.writer import BinaryWriter

        self.writer = BinaryWriter(self.tmp, chunk_bytes=self.chunk_bytes)

    def done(self, ref: ShardRef) -> bool:
        return self.complete

    def write(self, ref: ShardRef, samples: Iterator[Sample]) -> int:
        from litdata.streaming.serializers import JsonLeaf

        json_cols = {c for c in self.plan.columns if needs_json(self.plan.types[c])}
        n = 0
        for s in samples:
            item: dict[str, Any] = {IMAGE: s.image}
            for c in self.plan.columns:
                v = s.row.get(c)
                item[c] = JsonLeaf(python_value(v)) if c in json_cols else v
            self.writer.add_item(self.index, item)
            self.index += 1
            n += 1
        self.written += n
        return n

    def finish(self) -> None:
        if self.complete:
            return
        try:
            self.writer.done()
            index = [n for n in os.listdir(self.tmp) if n.endswith("index.json")]
            if not index:  # nothing was written (an empty dataset): litdata's own empty index
                meta = {"chunks": [], "config": None, "updated_at": "0"}
            else:
                with open(os.path.join(self.tmp, index[0])) as f:
                    meta = json.load(f)
                os.remove(os.path.join(self.tmp, index[0]))
            with open(os.path.join(self.tmp, "index.json"), "w") as f:
                json.dump(meta, f, sort_keys=True)
            self.clear()
            if self.local_out:
                path = fs_and_path(self.out)[1]
                for name in sorted(os.listdir(self.tmp), key=lambda n: (n == "index.json", n)):
                    os.replace(os.path.join(self.tmp, name), os.path.join(path, name))
            else:
                _put_folder(self.tmp, self.out, last="index.json")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def clear(self) -> None:
        fs, path = fs_and_path(self.out)
        if fs.isdir(path):
            for p in fs.ls(path, detail=False):
                name = p.rstrip("/").rsplit("/", 1)[-1]
                if name == "index.json" or (name.startswith("chunk-") and name.endswith(".bin")):
                    fs.rm(p)
