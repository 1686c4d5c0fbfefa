"""img2dataset drop-in: ``from clipcrawl import img2dataset; img2dataset.download(url_list, ...)``.

Same signature and defaults as img2dataset 1.47's ``download`` (every keyword), same output: sequential
keys, img2dataset's Parquet columns, ``_stats.json`` and files. The arguments become our configs in
:mod:`clipcrawl.pipelines.compat_download`; the download pass runs in compatibility mode
(:mod:`clipcrawl.pipelines.compat`). What differs on purpose: README, "Switching from img2dataset".
"""

from clipcrawl.pipelines.compat_download import download

__all__ = ["download"]
