"""Read image-URL inputs (img2dataset's formats, or crawl output) into pairs tables and input shards.

Inputs: a file or a folder of files in one of img2dataset's formats (``parquet``, ``csv``,
``tsv``, ``json`` (array of records; one object holding a single record is read as one row),
``jsonl``, ``txt`` (one URL per line), each optionally ``.gz``; text in UTF-8, or any encoding
charset-normalizer detects, e.g. latin-1), or crawl / Common Crawl output (``DIR/pairs/*.parquet`` in the PAIRS schema, also found
as ``DATASET/crawl/pairs``). Columns are renamed to ``url``/``caption``; ``save_additional_columns``
travel with the rows. Files are read in sorted order and their rows, in order, cut into shards of
``samples_per_shard`` rows (a shard may span files; only the last is shorter), so the same input
always gives the same shards however it is split into files (img2dataset mode keeps img2dataset's
per-file shards: :mod:`clipcrawl.pipelines.compat`). A repeated (url, caption) pair is kept once: later copies get status
``duplicate`` (``dedup_method`` url, ``duplicate_of`` the first copy's key) and are never fetched.
Unusable input raises :class:`ConfigError` naming the file, the row/line or column, and the fix.
In a JSONL file a bad line alone (not JSON, not an object, a URL or caption that is not a string, a
value of another type than the same field's earlier ones, a lone surrogate ``"\\ud800"`` that no
UTF-8 text can hold) becomes a row of its own with status ``failed_to_download`` and
``error_message`` ``"input: FILE line N: <why>"`` (empty URL, never fetched), in its place, and the
rest of the file is read; a file without one usable line is refused as a whole (exit 2).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.storage import fs_and_path, read_parquet
from clipcrawl.schemas.config import ConfigError, UrlListConfig
from clipcrawl.schemas.keys import sample_key
from clipcrawl.schemas.status import DedupMethod, Status
from clipcrawl.schemas.tables import PAIRS, SAMPLES

FORMATS = ("parquet", "csv", "tsv", "json", "jsonl", "txt")
#: Column names img2dataset and our SAMPLES schema reserve; not allowed as additional columns.
RESERVED_COLUMNS = frozenset(SAMPLES.names) | {"md5", "shard_id"}
DUPLICATE_MESSAGE = "input: duplicate of an earlier row with the same url and caption"


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str  # one of FORMATS, or "pairs" (crawl output, PAIRS schema)
    compression: str | None = None  # "gzip" or None


@dataclass
class InputShard:
    id: int
    table: pa.Table  # pairs columns + status/error_message/duplicate_of/dedup_method + extras
    source: str  # input file it came from


# ------------------------------------------------------------------ finding files
def detect_format(path: str) -> tuple[str | None, str | None]:
    """``x.tsv.gz`` -> ("tsv", "gzip"); unknown extension -> (None, ...)."""
    name = path.rsplit("/", 1)[-1].lower()
    compression = None
    if name.endswith(".gz"):
        compression, name = "gzip", name[:-3]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    return (ext if ext in FORMATS else None), compression


def _pairs_dir(fs, path: str) -> str | None:
    for sub in ("pairs", "crawl/pairs"):
        cand = f"{path}/{sub}"
        if fs.isdir(cand):
            return cand
    return None


def find_inputs(cfg: UrlListConfig) -> list[InputFile]:
    """The input files of ``cfg.path``, sorted; raises ConfigError when there are none."""
    fs, path = fs_and_path(cfg.path)
    if not fs.exists(path):
        raise ConfigError(f"{cfg.path}: input not found (fix: pass an existing file or folder)")
    if fs.isdir(path):
        pairs = _pairs_dir(fs, path)
        if pairs is not None:
            files = sorted(f for f in fs.ls(pairs, detail=False) if f.endswith(".parquet") and "/." not in f)
            if not files:
                raise ConfigError(f"{pairs}: no pairs Parquet files (fix: run the crawl first, or pass a URL list)")
            return [InputFile(_url(cfg.path, path, f), "pairs") for f in files]
        out = []
        for f in sorted(fs.ls(path, detail=False)):
            fmt, comp = detect_format(f)
            base = f.rsplit("/", 1)[-1]
            if base.startswith((".", "_")) or fmt is None:
                continue
            if cfg.input_format in ("auto", fmt):
                out.append(InputFile(_url(cfg.path, path, f), fmt, comp))
        if not out:
            want = "any of " + ", ".join(FORMATS) if cfg.input_format == "auto" else f"*.{cfg.input_format}[.gz]"
            raise ConfigError(f"{cfg.path}: no input files ({want}) in this folder (fix: check --input-format)")
        return out
    fmt, comp = detect_format(path)
    if cfg.input_format != "auto":
        fmt = cfg.input_format
    if fmt is None:
        raise ConfigError(
            f"{cfg.path}: cannot tell the input format from the file name (fix: pass --input-format "
            f"{'|'.join(FORMATS)})"
        )
    return [InputFile(cfg.path, fmt, comp)]


def _url(original: str, stripped: str, found: str) -> str:
    """Re-attach the protocol fsspec stripped (s3://bucket/x -> ls gives bucket/x)."""
    if "://" in original and "://" not in found:
        return original.split("://", 1)[0] + "://" + found
    return found


# ------------------------------------------------------------------ reading one file
def _open_bytes(f: InputFile) -> bytes:
    fs, path = fs_and_path(f.path)
    with fs.open(path, "rb") as fh:
        data = fh.read()
    if f.compression == "gzip" or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def _text(data: bytes) -> str:
    """Decode a text input: a BOM wins, then UTF-8, else the encoding charset-normalizer detects
    around the first byte that is not UTF-8 (a latin-1 / windows-1252 CSV is read correctly)."""
    import codecs

    for bom, name in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                      (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(name, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        from clipcrawl.crawler.charset import DETECT_BYTES, detect

        start = max(0, e.start - DETECT_BYTES // 2)
        codec = detect(data[start:start + DETECT_BYTES]) or "cp1252"
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            return data.decode("cp1252" if codec != "cp1252" else "latin-1", "replace")


def _json_records(obj: object, f: InputFile, url_col: str) -> list[dict]:
    """A JSON document -> records. Accepted: an array of objects, pandas' column-oriented object
    (``{"url": {"0": ...}}`` or ``{"url": [...]}``), or one object that is a single record
    (read as one row). Anything else is refused naming the item and the fix."""
    fix = "(fix: write a JSON array of objects [{...}, ...], or one object per line as .jsonl)"
    if isinstance(obj, list):
        for i, item in enumerate(obj, 1):
            if not isinstance(item, dict):
                raise ConfigError(f"{f.path}: item {i} of the JSON array is a {type(item).__name__}, "
                                  f"not an object {fix}")
        return obj
    if not isinstance(obj, dict):
        raise ConfigError(f"{f.path}: holds a JSON {type(obj).__name__}, not records {fix}")
    values = list(obj.values())
    if values and all(isinstance(v, (list, dict)) for v in values):  # column-oriented
        cols = {k: list(v.values()) if isinstance(v, dict) else v for k, v in obj.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) != 1:
            raise ConfigError(f"{f.path}: a column-oriented JSON object whose columns have different lengths "
                              f"({', '.join(f'{k}: {len(v)}' for k, v in cols.items())}) {fix}")
        return [dict(zip(cols, row)) for row in zip(*cols.values())]
    if isinstance(obj.get(url_col), str) or not any(isinstance(v, (list, dict)) for v in values):
        return [obj]  # one record
    raise ConfigError(f"{f.path}: holds one JSON object that is neither a record (no string {url_col!r}) "
                      f"nor column-oriented {fix}")


def _jsonl_records(text: str, f: InputFile) -> list[dict]:
    rows = []
    for n, line in _jsonl_lines(text):
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ConfigError(f"{f.path}: line {n}: not valid JSON: {_json_error(e)} "
                              f"(fix: one JSON object per line; correct or remove line {n})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{f.path}: line {n}: a JSON {type(row).__name__}, not an object "
                              f"(fix: one JSON object per line; correct or remove line {n})")
        rows.append(row)
    return rows


def _jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    for n, line in enumerate(text.split("\n"), 1):  # JSON strings may hold U+2028: split on \n only
        if line.strip():
            yield n, line


def _json_error(e: ValueError) -> str:
    return f"{e.msg} (column {e.colno})" if isinstance(e, json.JSONDecodeError) else str(e)


_TYPE_CLASS = {bool: "bool", int: "number", float: "number", str: "str", list: "list", dict: "dict"}


def _jsonl_table(text: str, f: InputFile, cfg: UrlListConfig) -> tuple[pa.Table, list[tuple[int, str, str]]] | None:
    """A JSONL file line by line: (table of the fields a pairs table keeps from its good lines, with their
    line numbers in ``__line``; [(line number, why, line)] of its bad lines). None when no line is good or a
    named column is in no good line: the strict reader then names the first problem, as for other formats."""
    text_fields = [cfg.url_col] + ([cfg.caption_col] if cfg.caption_col else [])
    fields = text_fields + [c for c in cfg.save_additional_columns if c not in text_fields]
    rows: list[dict] = []
    lines: list[int] = []
    bad: list[tuple[int, str, str]] = []
    first: dict[str, str] = {}  # field -> class of its first value
    for n, line in _jsonl_lines(text):
        try:
            row = json.loads(line)
        except ValueError as e:
            bad.append((n, f"not valid JSON: {_json_error(e)}", line))
            continue
        if not isinstance(row, dict):
            bad.append((n, f"a JSON {type(row).__name__}, not an object", line))
            continue
        kept = {k: row[k] for k in fields if row.get(k) is not None}
        why = _row_problem(kept, text_fields, first)
        if why:
            bad.append((n, why, line))
            continue
        for k, v in kept.items():
            first.setdefault(k, _TYPE_CLASS.get(type(v), "other"))
        rows.append(kept)
        lines.append(n)
    named = [cfg.url_col, *([cfg.caption_col] if cfg.caption_col not in (None, "caption") else []),
             *cfg.save_additional_columns]
    if not rows or any(k not in first for k in named):  # a column missing: the strict reader's error lists them
        return None
    cols = {k: [r.get(k) for r in rows] for k in fields if k in first}
    try:
        table = pa.table({k: pa.array(v) for k, v in cols.items()})
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None  # e.g. nested values of different shapes: the strict reader names them
    return table.append_column("__line", pa.array(lines, pa.int64())), bad


def _row_problem(kept: dict, text_fields: list[str], first: dict[str, str]) -> str | None:
    for k, v in kept.items():
        cls = _TYPE_CLASS.get(type(v), "other")
        if k in text_fields and cls != "str":
            return f"field {k!r} is a {type(v).__name__}, not a string"
        if k in first and first[k] != cls:
            return f"field {k!r} is a {type(v).__name__}, unlike earlier lines"
        if isinstance(v, int) and not isinstance(v, bool) and not -2**63 <= v < 2**63:
            return f"field {k!r} is an integer beyond 64 bits"
        if _has_surrogate(v):
            return f"field {k!r} holds a lone surrogate (e.g. \\ud800), which no UTF-8 text can hold"
    return None


def _has_surrogate(v: object) -> bool:
    if isinstance(v, str):
        return not v.isascii() and _SURROGATE.search(v) is not None
    if isinstance(v, list):
        return any(_has_surrogate(x) for x in v)
    if isinstance(v, dict):
        return any(_has_surrogate(k) or _has_surrogate(x) for k, x in v.items())
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")


def _from_records(rows: list[dict], f: InputFile, what: str) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
        # name the first record whose value type differs from the first non-null value of its key
        first: dict[str, type] = {}
        for n, row in enumerate(rows, 1):
            for k, v in row.items():
                if v is None:
                    continue
                t = first.setdefault(k, type(v))
                if t is not type(v) and not {t, type(v)} <= {int, float, bool}:
                    raise ConfigError(
                        f"{f.path}: {what} {n}: field {k!r} is a {type(v).__name__} but a {t.__name__} earlier "
                        f"(fix: give {k!r} one type in every record)") from None
                if _has_surrogate(v) or _has_surrogate(k):
                    raise ConfigError(f"{f.path}: {what} {n}: field {k!r} holds a lone surrogate (e.g. \\ud800), "
                                      f"which no UTF-8 text can hold (fix: correct or remove {what} {n})") from None
        raise ConfigError(f"{f.path}: cannot read it as {f.format}: {type(e).__name__}: {e} "
                          f"(fix: check the file)".replace("\n", " ")) from None


def _read_raw(f: InputFile, cfg: UrlListConfig, bad: list[tuple[int, str, str]] | None = None) -> pa.Table:
    """The file's columns as read. ``bad``: a list to collect the bad lines of a JSONL file in (the table
    then has only the fields a pairs table keeps, and a ``__line`` column); without it (img2dataset's
    compatibility mode) any bad line refuses the file."""
    import pyarrow.csv as pcsv

    try:
        if f.format in ("parquet", "pairs"):
            return read_parquet(f.path)
        data = _open_bytes(f)
        if f.format == "txt":
            urls = [line.strip() for line in _text(data).splitlines() if line.strip()]
            return pa.table({cfg.url_col: pa.array(urls, pa.string())})
        if f.format in ("csv", "tsv"):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:  # Arrow reads UTF-8 only: transcode what was detected
                data = _text(data).encode("utf-8")
            parse = pcsv.ParseOptions(delimiter="\t" if f.format == "tsv" else ",", newlines_in_values=True)
            return pcsv.read_csv(io.BytesIO(data), parse_options=parse)
        if f.format == "jsonl":
            text = _text(data)
            lenient = _jsonl_table(text, f, cfg) if bad is not None else None
            if lenient is not None:
                bad.extend(lenient[1])
                return lenient[0]
            return _from_records(_jsonl_records(text, f), f, "line")
        if f.format == "json":
            return _from_records(_json_records(json.loads(_text(data)), f, cfg.url_col), f, "record")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader error is an unusable input
        raise _unreadable(f, e) from None
    raise ConfigError(f"{f.path}: unknown input format {f.format!r} (fix: use one of {', '.join(FORMATS)})")


def _unreadable(f: InputFile, e: Exception) -> ConfigError:
    return ConfigError(f"{f.path}: cannot read it as {f.format}: {type(e).__name__}: {e} "
                       f"(fix: check the file, or pass the right --input-format)".replace("\n", " "))


def read_input_file(f: InputFile, cfg: UrlListConfig) -> pa.Table:
    """One input file -> a pairs table (key, url, caption, source, ... + additional columns; and
    ``error_message`` on the rows of bad JSONL lines, see the module doc)."""
    bad: list[tuple[int, str, str]] = []
    raw = _read_raw(f, cfg, bad)
    if "__line" not in raw.column_names:
        return _pairs(raw, f, cfg)
    lines = raw.column("__line").to_pylist()
    table = _pairs(raw.drop_columns(["__line"]), f, cfg)
    if not bad:
        return table
    name = f.path.rsplit("/", 1)[-1]
    failed = pa.table({
        "key": [sample_key("", f"input:{name}:{n}:{line}") for n, _, line in bad],  # unique, stable
        "url": [""] * len(bad), "caption": pa.nulls(len(bad), pa.string()), "source": ["list"] * len(bad),
        "error_message": [f"input: {name} line {n}: {why}" for n, why, _ in bad],
    })
    both = pa.concat_tables([table, failed], promote_options="permissive")
    order = sorted(range(both.num_rows), key=(lines + [n for n, _, _ in bad]).__getitem__)
    return both.take(pa.array(order, pa.int64()))


def iter_input_file(f: InputFile, cfg: UrlListConfig, batch_rows: int) -> Iterator[pa.Table]:
    """:func:`read_input_file` in pieces: Parquet inputs are read ``batch_rows`` rows at a time (a list of
    millions of URLs is never in memory at once); the text formats come whole."""
    if f.format not in ("parquet", "pairs"):
        yield read_input_file(f, cfg)
        return
    import pyarrow.parquet as pq

    fs, path = fs_and_path(f.path)
    with fs.open(path, "rb") as fh:
        try:
            pf = pq.ParquetFile(fh)
            for batch in pf.iter_batches(batch_size=max(1, batch_rows)):
                yield _pairs(pa.Table.from_batches([batch]), f, cfg)
            if pf.metadata.num_rows == 0:  # no rows: the columns still have to be right
                yield _pairs(pf.schema_arrow.empty_table(), f, cfg)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - any reader error is an unusable input
            raise _unreadable(f, e) from None


def _pairs(raw: pa.Table, f: InputFile, cfg: UrlListConfig) -> pa.Table:
    cols = raw.column_names
    if f.format == "pairs":
        if "url" not in cols:
            raise ConfigError(f"{f.path}: not a pairs file (no 'url' column) (fix: pass the crawl output folder)")
        return _with_keys(raw, None if "caption" not in cols else "caption", "url", keep=cols)
    if cfg.url_col not in cols:
        raise ConfigError(
            f"{f.path}: no URL column {cfg.url_col!r} (columns: {', '.join(cols) or 'none'}) "
            f"(fix: pass --url-col with the column holding the image URLs)"
        )
    caption_col = cfg.caption_col if f.format != "txt" else None
    if caption_col is not None and caption_col not in cols:
        if caption_col != "caption":  # the default name may be absent (no captions); a chosen one may not
            raise ConfigError(
                f"{f.path}: no caption column {caption_col!r} (columns: {', '.join(cols)}) "
                f"(fix: pass --caption-col with the right name, or leave it out)"
            )
        caption_col = None
    _check_text_column(raw, f, cfg.url_col, "URL")
    if caption_col is not None:
        _check_text_column(raw, f, caption_col, "caption")
    extras = list(cfg.save_additional_columns)
    bad = sorted(set(extras) & RESERVED_COLUMNS)
    if bad:
        raise ConfigError(f"--save-additional-columns: {', '.join(bad)} are reserved output columns (fix: drop them)")
    missing = [c for c in extras if c not in cols]
    if missing:
        raise ConfigError(
            f"{f.path}: additional column(s) {', '.join(missing)} not found (columns: {', '.join(cols)}) "
            f"(fix: correct --save-additional-columns)"
        )
    return _with_keys(raw, caption_col, cfg.url_col, keep=extras)


def _check_text_column(raw: pa.Table, f: InputFile, name: str, role: str) -> None:
    """URLs and captions are strings: a list/struct/map column is refused naming its first row."""
    col = raw.column(name)
    t = col.type
    if not pa.types.is_nested(t):
        try:
            col.cast(pa.string()) if not pa.types.is_null(t) else None
            return
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. binary that is not UTF-8
            pass
    values = col.to_pylist()
    row = next((i for i, v in enumerate(values, 1) if v is not None), 1)
    shown = repr(values[row - 1])[:80] if values else ""
    raise ConfigError(
        f"{f.path}: row {row}: {role} column {name!r} holds {t} values ({shown}), not strings "
        f"(fix: one {role} string per row, e.g. explode the lists first, or pass the right "
        f"--{'url' if role == 'URL' else 'caption'}-col)"
    )


def _strings(col: pa.ChunkedArray) -> list[str | None]:
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        col = col.cast(pa.string()) if not pa.types.is_null(col.type) else pa.nulls(len(col), pa.string())
    return col.to_pylist()


def _with_keys(raw: pa.Table, caption_col: str | None, url_col: str, keep: list[str]) -> pa.Table:
    urls = [(u or "").strip() for u in _strings(raw.column(url_col))]
    captions = _strings(raw.column(caption_col)) if caption_col else [None] * raw.num_rows
    keys = [sample_key(u, c) for u, c in zip(urls, captions)]
    arrays = {"key": pa.array(keys, pa.string()), "url": pa.array(urls, pa.string()),
              "caption": pa.array(captions, pa.string())}
    if "source" not in keep:
        arrays["source"] = pa.array(["list"] * raw.num_rows, pa.string())
    for c in keep:
        if c not in arrays and c not in (url_col, caption_col):
            arrays[c] = raw.column(c)
    return pa.table(arrays)


# ------------------------------------------------------------------ public API
def read_url_list(cfg: UrlListConfig) -> pa.Table:
    """All rows of all input files as one pairs table (duplicates included)."""
    tables = [read_input_file(f, cfg) for f in find_inputs(cfg)]
    if not tables:
        return PAIRS.empty_table()
    return pa.concat_tables(tables, promote_options="permissive")


def mark_input_duplicates(table: pa.Table, seen: set[int]) -> pa.Table:
    """Add status/error_message/duplicate_of/dedup_method; repeated keys become ``duplicate``, rows of
    bad input lines (an ``error_message`` already) ``failed_to_download``."""
    keys = table.column("key").to_pylist()
    bad = [None] * len(keys)
    if "error_message" in table.column_names:
        bad = table.column("error_message").to_pylist()
        table = table.drop_columns(["error_message"])
    status, errors, dup_of, method = [], [], [], []
    for k, why in zip(keys, bad):
        h = int(k[:16], 16)
        if why is not None:
            status.append(Status.FAILED_TO_DOWNLOAD.value)
            errors.append(why)
            dup_of.append(None)
            method.append(None)
        elif h in seen:
            status.append(Status.DUPLICATE.value)
            errors.append(DUPLICATE_MESSAGE)
            dup_of.append(k)
            method.append(DedupMethod.URL.value)
        else:
            seen.add(h)
            status.append(Status.SUCCESS.value)
            errors.append(None)
            dup_of.append(None)
            method.append(None)
    for name, values in (("status", status), ("error_message", errors), ("duplicate_of", dup_of),
                         ("dedup_method", method)):
        table = table.append_column(name, pa.array(values, pa.string()))
    return table


def plan_input_shards(cfg: UrlListConfig, samples_per_shard: int, per_file: bool = False) -> Iterator[InputShard]:
    """Deterministic input shards of ``samples_per_shard`` rows, in input order (files sorted, rows in file
    order), whatever the input's split into files: a shard may end in the next file (``source`` names each
    file it holds rows of, comma-separated), only the last one is shorter -- so a folder of a thousand
    small pairs files (``clipcrawl commoncrawl``: one per WARC/WAT) gives full shards. ``per_file``: the
    layout of downloads made before (each file cut on its own, its last shard shorter), kept so such a
    download still resumes (:func:`~clipcrawl.pipelines.passes.download.resume_layout`). Parquet inputs
    stream a shard at a time; what the run keeps is the set of key hashes that finds repeated pairs."""
    seen: set[int] = set()
    shard_id = 0
    buf: pa.Table | None = None
    names: list[tuple[str, int]] = []  # (input file, rows of it in buf), in order

    def cut(n: int) -> InputShard:
        nonlocal buf, shard_id
        assert buf is not None
        shard = InputShard(shard_id, buf.slice(0, n).combine_chunks(), _take_names(names, n))
        shard_id += 1
        buf = buf.slice(n)
        return shard

    for f in find_inputs(cfg):
        name = os.path.basename(f.path)
        for part in iter_input_file(f, cfg, samples_per_shard):
            part = mark_input_duplicates(part, seen)
            if part.num_rows == 0:
                continue
            buf = part if buf is None or buf.num_rows == 0 else _concat(buf, part, names, name)
            names.append((name, part.num_rows))
            while buf.num_rows >= samples_per_shard:
                yield cut(samples_per_shard)
        if per_file and buf is not None and buf.num_rows:
            yield cut(buf.num_rows)
    if buf is not None and buf.num_rows:
        yield cut(buf.num_rows)


def _concat(buf: pa.Table, part: pa.Table, names: list[tuple[str, int]], name: str) -> pa.Table:
    """Rows of one file after those of the previous ones (types promoted: int64 and double -> double)."""
    try:
        return pa.concat_tables([buf, part], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        clash = [f"{c} ({buf.schema.field(c).type} / {part.schema.field(c).type})" for c in part.column_names
                 if c in buf.column_names and buf.schema.field(c).type != part.schema.field(c).type]
        before = names[-1][0] if names else "an earlier file"
        raise ConfigError(f"{name}: column(s) {', '.join(clash) or '?'} of another type than in {before} "
                          f"(fix: give each column one type in every input file)") from None


def _take_names(names: list[tuple[str, int]], n: int) -> str:
    """The files the next ``n`` buffered rows come from (consumed from ``names``)."""
    out: list[str] = []
    while n > 0 and names:
        name, rows = names[0]
        if not out or out[-1] != name:
            out.append(name)
        if rows <= n:
            names.pop(0)
            n -= rows
        else:
            names[0] = (name, rows - n)
            n = 0
    return ",".join(out)


def count_rows(table: pa.Table, status: str) -> int:
    return int(pc.sum(pc.equal(table.column("status"), status)).as_py() or 0)
