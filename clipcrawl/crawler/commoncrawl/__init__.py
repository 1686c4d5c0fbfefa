"""Image-URL/alt-text pairs from Common Crawl (or any) WARC, WAT and ARC files.

Two ways in, as LAION/DataComp/cc2dataset collected pairs:

* **WAT** metadata records: ``IMG@/src`` links with ``alt`` (``title`` as fallback), already
  extracted by Common Crawl; cheap (JSON only), see :mod:`.wat`.
* **WARC** ``response`` records: the HTML goes through the crawler's extractor
  (:func:`clipcrawl.crawler.extract.extract_page`), so srcset, lazy-loading attributes,
  figcaptions and meta robots count exactly as in a live crawl; see :mod:`.warc`.

:func:`read_commoncrawl` reads many inputs (local paths, globs, ``s3://``/``https://`` URLs) in
worker processes into ``OUT/pairs/NNNNN.parquet`` (PAIRS schema) with a resumable per-input
state under ``OUT/state/``; ``clipcrawl download OUT`` takes it from there.
"""

from clipcrawl.crawler.commoncrawl.process import FileReport, ReadOptions, process_file
from clipcrawl.crawler.commoncrawl.records import ArchiveError, RawRecord, iter_records
from clipcrawl.crawler.commoncrawl.run import CommonCrawlSummary, expand_inputs, read_commoncrawl

__all__ = [
    "ArchiveError",
    "CommonCrawlSummary",
    "FileReport",
    "RawRecord",
    "ReadOptions",
    "expand_inputs",
    "iter_records",
    "process_file",
    "read_commoncrawl",
]
