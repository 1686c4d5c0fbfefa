"""``--format litdata``: one litdata ``BinaryWriter`` over all source shards (its ``data_format`` is fixed by
the first sample, so parts written separately could disagree) into a local temp folder; chunks and
``index.json`` are published at the end (the index last). A killed litdata export is redone from the start;
a finished one (same record) is not redone."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import exists, fs_and_path, is_local
from clipcrawl.pipelines.export.sinks import Sink, put_folder
from clipcrawl.pipelines.export.source import Sample, SourcePlan
from clipcrawl.schemas.config import ConfigError
from clipcrawl.schemas.export import IMAGE, needs_json, python_value


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
                put_folder(self.tmp, self.out, last="index.json")
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
