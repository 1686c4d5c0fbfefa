"""``clipcrawl stats``: what a dataset is, in the terminal and in one self-contained HTML page.

- :mod:`.layout` finds the parts of a dataset (a folder or an ``s3://...`` URL, through
  :class:`~clipcrawl.base.layout.DatasetLayout` and fsspec) or of a plain download output dir;
  :mod:`.check` names the files that cannot be read (``clipcrawl stats`` exits 1 over them).
- :mod:`.sql` / :mod:`.aggregate` / :mod:`.history` compute every number with DuckDB over the
  Parquet columns the report needs (never the images).
- :mod:`.samples` picks the sample grids and reads a few thumbnails from the shards
  (:mod:`clipcrawl.base.shardfiles`).
- :mod:`.terminal` (rich tables) and :mod:`.html` (+ :mod:`.plots`, matplotlib) render it.
"""
