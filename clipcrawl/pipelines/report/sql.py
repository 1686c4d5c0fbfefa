"""DuckDB helpers for the report: one in-memory table of the few derived columns it needs.

The samples Parquet files are read once, column-pruned, into ``s`` (status, error message,
URL authority, language (the caption's, else the page's declared one), sizes, scores, dedup
method, run, shard). Every aggregate is a GROUP BY over ``s``; per-row work is kept to cheap
string functions: regexes (error normalisation) and host parsing run on the grouped distinct
values only. Captions are
measured separately with pyarrow (:mod:`.captions`); images are never loaded here.
Columns a file lacks (plain img2dataset output has no CLIP columns) read as NULL.

Files are URL strings: local paths are read by DuckDB itself, remote ones (``s3://...``) through
the dataset's fsspec filesystem registered with the connection (no DuckDB extension needed).
"""

from __future__ import annotations

import math
from typing import Any

#: error_message -> cause, before the cut: URLs, quoted strings, paths, IPv4 addresses, hex ids and numbers replaced
#: (long all-digit numbers such as pixel counts are numbers, ``N``, not hex ids).
_CLEAN_ERROR = r"""
trim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
    regexp_replace(regexp_replace({col}, '[A-Za-z][A-Za-z0-9+.-]*://[^\s''"<>]*', '<url>', 'g'),
    '''[^'']*''|"[^"]*"', '<str>', 'g'),
    '(/[^\s/]+){{2,}}/?', '<path>', 'g'),
    '\b\d{{1,3}}(\.\d{{1,3}}){{3}}\b', '<ip>', 'g'),
    '\d+x\d+', 'NxN', 'g'),
    '(^|[^A-Za-z0-9.])[-+]?\d{{8,}}(\.\d+)?\b', '\1N', 'g'),
    '(^|[^A-Za-z0-9.])[0-9A-Fa-f]{{8,}}\b', '\1<hex>', 'g'),
    '(^|[^A-Za-z0-9.])[-+]?\d+(\.\d+)?', '\1N', 'g'),
    '\s+', ' ', 'g'))
"""
CAUSE_CHARS = 80
#: error_message -> cause: _CLEAN_ERROR cut to at most CAUSE_CHARS characters between words
#: (" …" marks a cut), never inside one.
NORMALISE_ERROR = (
    "(CASE WHEN length(@) <= {CAUSE_CHARS} THEN @ ELSE coalesce(nullif(regexp_extract(left(@, {CAUSE_CHARS} + 1), "
    r"'^(.*\S)\s', 1), ''), left(@, {CAUSE_CHARS})) || ' …' END)"
).replace("{CAUSE_CHARS}", str(CAUSE_CHARS)).replace("@", _CLEAN_ERROR)


def error_text(e: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def connect(threads: int | None = None, fs=None):
    """An in-memory DuckDB connection; ``fs`` (an fsspec filesystem) is registered when it is remote,
    so ``s3://...`` paths read through it."""
    import duckdb

    from clipcrawl.base.storage import is_local

    con = duckdb.connect(":memory:")
    if fs is not None and not is_local(fs):
        con.register_filesystem(fs)
    if threads:
        con.execute(f"SET threads={int(threads)}")
    con.execute("SET preserve_insertion_order=false")
    con.execute("SET enable_progress_bar=false")
    return con


def files_sql(files: list[str]) -> str:
    quoted = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return f"read_parquet([{quoted}], union_by_name=true, filename=true)"


def columns_of(con, files: list[str]) -> set[str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {files_sql(files)}").fetchall()
    return {r[0] for r in rows}


def score_columns(have: set[str]) -> list[str]:
    """The further CLIP score columns the files have (clip_sigmoid, clip_similarity_<name>,
    clip_sigmoid_<name>; clipcrawl.filters.clip.multi), sorted: kept under their own names in ``s``."""
    import re

    pat = re.compile(r"^(clip_sigmoid|clip_similarity_[a-z0-9_]{1,40}|clip_sigmoid_[a-z0-9_]{1,40})$")
    return sorted(c for c in have if pat.match(c))


def _select(have: set[str]) -> str:
    """The columns of ``s`` from files that have the columns ``have`` (absent ones read as NULL)."""

    def col(name: str, cast: str) -> str:
        return f"CAST({name} AS {cast})" if name in have else f"CAST(NULL AS {cast})"

    def lang(name: str) -> str:  # primary subtag, lower case
        return f"nullif(lower(split_part(replace(trim({col(name, 'VARCHAR')}), '_', '-'), '-', 1)), '')"

    from clipcrawl.pipelines.report.signals import select_columns

    status = "coalesce(status, 'unknown')" if "status" in have else "'success'"
    url = col("url", "VARCHAR")
    scores = "".join(f"CAST({c} AS DOUBLE) AS {c},\n        " for c in score_columns(have))
    return f"""
        {scores}
        CAST({status} AS VARCHAR) AS status,
        {col("error_message", "VARCHAR")} AS error_message,
        split_part(split_part(split_part(split_part({url}, '://', 2), '/', 1), '?', 1), '#', 1) AS authority,
        coalesce({lang("language")}, {lang("page_language")}) AS lang,
        {col("original_width", "INTEGER")} AS ow,
        {col("original_height", "INTEGER")} AS oh,
        {col("clip_similarity", "DOUBLE")} AS clip,
        {col("punsafe", "DOUBLE")} AS punsafe,
        {col("pwatermark", "DOUBLE")} AS pwatermark,
        {col("dedup_method", "VARCHAR")} AS dedup_method,
        {col("run", "INTEGER")} AS run,
        {col("ai_generated", "BOOLEAN")} AS ai_generated,
        {col("c2pa_present", "BOOLEAN")} AS c2pa_present,
        {col("license", "VARCHAR")} AS license,
        {select_columns(have)},
        parse_filename(filename, true) AS shard,
        ({col("original_width", "INTEGER")} IS NOT NULL OR {col("sha256", "VARCHAR")} IS NOT NULL) AS fetched
    """


def load_samples(con, files: list[str]) -> tuple[set[str], dict[str, str]]:
    """Create table ``s`` from the samples Parquet; return the column names the files have, and
    file -> error of the files DuckDB could not read (not Parquet, truncated, corrupt pages).

    One query reads every file; only when it fails is each file loaded alone, so one broken
    file costs the report that file, not the report.
    """
    import duckdb


    try:
        have = columns_of(con, files)
        con.execute(f"CREATE TABLE s AS SELECT {_select(have)} FROM {files_sql(files)}")
        return have, {}
    except duckdb.Error:
        con.execute("DROP TABLE IF EXISTS s")
    have, bad, created = set(), {}, False
    for f in files:
        try:
            got = columns_of(con, [f])
            verb = "INSERT INTO s" if created else "CREATE TABLE s AS"
            con.execute(f"{verb} SELECT {_select(got)} FROM {files_sql([f])}")
        except duckdb.Error as e:
            bad[f] = error_text(e)
            continue
        have |= got
        created = True
    return have, bad


def host_of(authority: str | None) -> str:
    """Lower-case host of a URL authority (``user@Host:port`` -> ``host``; IPv6 keeps its brackets)."""
    if not authority:
        return ""
    h = authority.rsplit("@", 1)[-1]
    h = h[: h.index("]") + 1] if h.startswith("[") and "]" in h else h.split(":", 1)[0]
    return h.lower().rstrip(".")


def rows(con, sql: str, params: list[Any] | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def scalar(con, sql: str, params: list[Any] | None = None) -> Any:
    return con.execute(sql, params or []).fetchone()[0]


def count_rows(con, files: list[str]) -> int:
    """Row count of Parquet files from their footers (no data read)."""
    if not files:
        return 0
    quoted = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return int(scalar(con, f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata([{quoted}])"))


def group_counts(con, table_sql: str, key: str, where: str = "TRUE") -> dict[str, int]:
    got = rows(con, f"SELECT {key} AS k, count(*) FROM {table_sql} WHERE {where} GROUP BY k ORDER BY 2 DESC")
    return {("unknown" if k is None else str(k)): int(n) for k, n in got}


def clean(x: Any) -> Any:
    """JSON-safe number: NaN/inf -> None, numpy scalars -> Python."""
    if x is None:
        return None
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
