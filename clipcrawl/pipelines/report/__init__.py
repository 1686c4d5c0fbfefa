"""``clipcrawl stats``: what a dataset is, in the terminal and in one self-contained HTML page.

- :mod:`.layout` finds the parts of a dataset dir (or a plain download output dir).
- :mod:`.sql` / :mod:`.aggregate` / :mod:`.history` compute every number with DuckDB over the
  Parquet columns the report needs (never the images).
- :mod:`.samples` picks the sample grids and reads a few thumbnails from the shard tars.
- :mod:`.terminal` (rich tables) and :mod:`.html` (+ :mod:`.plots`, matplotlib) render it.
"""
