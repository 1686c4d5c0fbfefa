"""``--format hf``: ``OUT/data/train-SHARD.parquet`` (row groups of 256 rows, streamed; the ``image`` column is
the ``datasets.Image`` feature's struct of bytes + path, the ``datasets`` features in the Arrow schema's
``huggingface`` metadata) and ``OUT/README.md`` (YAML ``configs``/``data_files``, ``dataset_info`` features), so
``datasets.load_dataset(OUT)`` gives decoded PIL images and typed columns; ``--push-to-hub`` uploads it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import atomic_open, exists, fs_and_path, is_local, remove
from clipcrawl.pipelines.export.sinks import Sink
from clipcrawl.pipelines.export.source import Sample
from clipcrawl.schemas.config import ConfigError
from clipcrawl.schemas.export import HF_IMAGE_TYPE, HF_SPLIT, IMAGE

ROW_GROUP = 256


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
    api.create_repo(repo, repo_type="dataset", private=private or None, exist_ok=True)  # None: the account default
    info = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=path,
                             allow_patterns=["README.md", "data/*.parquet"],
                             commit_message="clipcrawl export --format hf")
    return str(getattr(info, "commit_url", info))


