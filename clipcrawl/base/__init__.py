"""The ground layer: the Stage contract, storage (fsspec, atomic writes, Parquet/JSON), the read side of
shard files, the dataset layout, progress/logging and failpoints. It imports ``clipcrawl.schemas`` only;
``crawler/``, ``filters/`` and ``pipelines/`` build on it."""
