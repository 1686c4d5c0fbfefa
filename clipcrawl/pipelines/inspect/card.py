"""``clipcrawl card``: a Hugging Face dataset card (``DATASET/README.md``) written from the dataset itself.

The YAML header follows the Hub's dataset-card metadata: ``pretty_name``, ``license``,
``task_categories``, ``size_categories``, ``language``, ``configs`` and ``dataset_info``
(features and splits). ``configs`` points the default config at ``samples/*.parquet``, the kept
samples typed by our Arrow schema, so ``datasets.load_dataset(DATASET)`` reads the metadata with
the card in place (tested; without ``configs`` it would mix every Parquet file of the folder:
shards, samples, embeddings metadata). The tars (``shards/*.tar``, WebDataset: image + caption +
per-sample JSON) are not a config: ``datasets`` infers one builder per repository from the data
files (a ``shards/*.tar`` config next to Parquet is read as Parquet and fails), and its JSON
inference types a column from its first values, so columns that are null early
(``img_width_attr``, ``duplicate_of``) come out null-typed; the card shows the
``load_dataset("webdataset", data_files=...)`` call for the images instead (tested; it can fail
with "Couldn't cast ... to null" while early samples' JSON has null-only columns). The body is generated from the manifest, the shard stats, the resolved
config and the crawl's page table: sources and dates, rules and thresholds, models, the funnel,
the opt-outs honoured, and known limitations.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pyarrow as pa

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.shardfiles import list_shards
from clipcrawl.base.storage import atomic_open, fs_and_path, read_json
from clipcrawl.schemas.status import SAMPLE_STATUSES

TASKS = ("zero-shot-image-classification", "image-to-text", "text-to-image", "image-feature-extraction")
_HF_TYPES = {"float": "float32", "double": "float64", "halffloat": "float16", "bool": "bool"}


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
                        (1_000_000_000, "100M<n<1B")):
        if n < limit:
            return name
    return "1B<n<10B"


def hf_features(schema: pa.Schema) -> list[dict[str, Any]] | None:
    """``dataset_info.features`` of an Arrow schema: Hugging Face's own mapping when ``datasets`` is
    installed (nested columns included); otherwise flat columns only (None when a type is nested)."""
    try:
        import datasets
    except ImportError:
        datasets = None
    if datasets is not None:
        try:
            return datasets.Features.from_arrow_schema(schema)._to_yaml_list()
        except Exception:  # noqa: BLE001 - a type datasets cannot map: fall back to the plain names
            pass
    out = []
    for f in schema:
        t = f.type
        if pa.types.is_nested(t) or pa.types.is_dictionary(t):
            return None
        out.append({"name": f.name, "dtype": _HF_TYPES.get(str(t), str(t))})
    return out


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=120)


def _read_yaml(url: str) -> dict[str, Any]:
    import yaml

    fs, p = fs_and_path(url)
    if not fs.exists(p):
        return {}
    with fs.open(p, "r", encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return data if isinstance(data, dict) else {}


def _funnel(layout: DatasetLayout) -> tuple[Counter, Counter]:
    """Per-status counts and drop reasons summed over the shard stats files."""
    counts, reasons = Counter(), Counter()
    for ref in list_shards(layout.shards):
        st = read_json(ref.stats)
        counts["candidates"] += int(st.get("count", 0))
        for s in SAMPLE_STATUSES:
            key = "successes" if s == "success" else s
            counts[s] += int(st.get(key, 0) or 0)
        for reason, n in (st.get("status_dict") or {}).items():
            if reason != "success":
                reasons[reason.split(":", 1)[0]] += int(n)
    return counts, reasons


def _provenance(layout: DatasetLayout, kept: pa.Table) -> dict[str, Any]:
    """Refusals by the image-level opt-outs (shard stats), AI-generated and licences among the kept samples."""
    from clipcrawl.filters.provenance import licence_breakdown, refusal_kind

    refused: Counter = Counter()
    for ref in list_shards(layout.shards):
        for reason, n in (read_json(ref.stats).get("status_dict") or {}).items():
            kind = refusal_kind(reason)
            if kind:
                refused[kind] += int(n)
    names = kept.column_names
    ai = sum(1 for v in kept.column("ai_generated").to_pylist() if v) if "ai_generated" in names else None
    lic = licence_breakdown(kept.column("license").to_pylist()) if "license" in names else {}
    return {"refused": refused, "ai_generated": ai, "licences": lic}


def _pages(layout: DatasetLayout) -> Counter:
    fs, p = fs_and_path(layout.source_dir("crawl") + "/pages")
    if not fs.isdir(p):
        return Counter()
    import pyarrow.parquet as pq

    out: Counter = Counter()
    for f in fs.ls(p, detail=False):
        if f.endswith(".parquet"):
            with fs.open(f, "rb") as fh:
                out.update(pq.read_table(fh, columns=["status"]).column("status").to_pylist())
    return out


def collect(dataset: str) -> dict[str, Any]:
    """Everything the card states, gathered from the dataset's files."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    layout = DatasetLayout.of(dataset)
    from clipcrawl.pipelines.manifest import kept_samples, load_manifest

    manifest = load_manifest(dataset)
    files = [layout.samples_file(n) for n in manifest.get("shards", {})]
    if not files:
        raise ValueError(f"{dataset}: no published samples (manifest.json lists no shards); run clipcrawl run first")
    fs, p0 = fs_and_path(files[0])
    with fs.open(p0, "rb") as f:
        schema = pq.read_schema(f)
    kept = kept_samples(dataset)
    langs = Counter(v[:2].lower() for v in kept.column("page_language").drop_null().to_pylist() if len(v) >= 2)
    found = kept.column("found_at").drop_null()
    hosts = pc.extract_regex(kept.column("url"), r"^[a-z]+://(?P<h>[^/:?#]+)").drop_null()
    counts, reasons = _funnel(layout)
    return {
        "name": layout.root.rstrip("/").rsplit("/", 1)[-1], "manifest": manifest, "schema": schema,
        "nbytes": int(kept.nbytes),
        "config": _read_yaml(layout.config), "kept": kept.num_rows, "funnel": counts, "reasons": reasons,
        "models": sorted(set(kept.column("clip_model").drop_null().to_pylist())),
        "more_models": _more_models(kept),
        "signal_sources": sorted(set(kept.column("signal_sources").drop_null().to_pylist()))
        if "signal_sources" in kept.column_names else [],
        "languages": [lang for lang, n in langs.most_common() if lang.isalpha() and n >= max(1, kept.num_rows // 100)],
        "found": (pc.min(found).as_py(), pc.max(found).as_py()) if len(found) else None,
        "domains": len(set(pc.struct_field(hosts, [0]).to_pylist())) if len(hosts) else 0,
        "sources": Counter(kept.column("source").drop_null().to_pylist()),
        "pages": _pages(layout),
        "provenance": _provenance(layout, kept),
        "embeddings": fs.isdir(fs_and_path(layout.embeddings)[1]),
        "tars": not layout.plain and any(fs.exists(fs_and_path(r.tar)[1]) for r in list_shards(layout.shards)[:1]),
        "index": fs.exists(fs_and_path(layout.p("index", "index.json"))[1]),
    }


def _more_models(kept) -> list[tuple[str, str]]:
    """(score column, model) of each further CLIP scorer the kept rows record (filters.clip.models)."""
    from clipcrawl.schemas.tables import clip_score_columns

    out = []
    for score, model_col in clip_score_columns(kept.column_names).items():
        if model_col in kept.column_names:
            out += [(score, m) for m in sorted(set(kept.column(model_col).drop_null().to_pylist()))]
    return out


def header(info: dict[str, Any], pretty_name: str | None, license_id: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "pretty_name": pretty_name or f"{info['name']} (clipcrawl image-text pairs)",
        "license": license_id,
        "task_categories": list(TASKS),
        "size_categories": [size_category(info["kept"])],
    }
    if info["languages"]:
        meta["language"] = info["languages"]
    meta["tags"] = ["clip", "image-text", "webdataset", "clipcrawl"]
    meta["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": "samples/*.parquet"}]}]
    features = hf_features(info["schema"])
    ds_info: dict[str, Any] = {"features": features} if features else {}
    ds_info["splits"] = [{"name": "train", "num_bytes": info["nbytes"], "num_examples": info["kept"]}]
    meta["dataset_info"] = ds_info
    return meta


def _fmt_sources(cfg: dict[str, Any]) -> list[str]:
    src = cfg.get("sources") or {}
    out = []
    if src.get("crawl"):
        c = src["crawl"]
        seeds = c.get("seeds") or []
        out.append(f"- **Web crawl** from {len(seeds)} seed(s) ({', '.join(f'`{s}`' for s in seeds[:5])}"
                   f"{', ...' if len(seeds) > 5 else ''}), max depth {c.get('max_depth')}, "
                   f"max pages {c.get('max_pages')}, user agent `{c.get('user_agent')}`.")
    if src.get("commoncrawl"):
        c = src["commoncrawl"]
        out.append(f"- **Common Crawl** WAT/WARC files: {json.dumps({k: v for k, v in c.items() if v}, default=str)[:300]}.")
    if src.get("urls"):
        out.append(f"- **URL list**: `{(src['urls'] or {}).get('path') or (src['urls'] or {}).get('paths')}`.")
    return out or ["- Not recorded (no `config.yaml`; the shards came from another tool)."]


def _fmt_rules(cfg: dict[str, Any]) -> list[str]:
    f, d, dl = cfg.get("filters") or {}, cfg.get("dedup") or {}, cfg.get("download") or {}
    out = []
    if dl:
        out.append(f"- **Download**: images resized to {dl.get('image_size')} px ({dl.get('resize_mode')}), "
                   f"min side {dl.get('min_image_size')}, max aspect ratio {dl.get('max_aspect_ratio')}, "
                   f"max {dl.get('max_bytes')} bytes, encoded as {dl.get('encode_format')}.")
    t = f.get("text") or {}
    if t.get("enabled", True) and t:
        out.append(f"- **Caption rules**: {t.get('min_words')}+ words, {t.get('min_chars')}-{t.get('max_chars')} "
                   f"characters, generic captions (file names, 'image') dropped: {t.get('drop_generic')}, "
                   f"deny patterns: {len(t.get('deny_patterns') or [])}.")
    sig = f.get("signals") or {}
    if sig.get("compute"):
        rules = [f"{k} {v}" for k, v in sig.items() if k.startswith(("min_", "max_", "top_fraction")) and v is not None]
        out.append(f"- **Curation signals**: {', '.join(sig['compute'])} computed"
                   + (f"; dropped as `filtered_image` by {', '.join(rules)}" if rules else "; stored, not used to drop")
                   + (f" (top_by {sig.get('top_by')})" if sig.get("top_fraction") else "") + ".")
    c = f.get("clip") or {}
    if c.get("enabled", True) and c:
        model = c.get("model") + (f"/{c['pretrained']}" if c.get("pretrained") else "")
        out.append(f"- **CLIP filter**: `{model}`, cosine(image, caption) threshold **{c.get('threshold')}** "
                   f"(samples below are dropped as `filtered_clip`); `punsafe`/`pwatermark` are zero-shot "
                   f"probabilities from {len(c.get('unsafe_prompts') or [])} + {len(c.get('watermark_prompts') or [])} "
                   "prompts, stored, not used to drop.")
    if d.get("enabled", True) and d:
        methods = [m for m in ("url", "sha256", "pixels", "phash", "semantic") if d.get(m)]
        out.append(f"- **Deduplication**: {', '.join(methods)}; pHash Hamming distance <= "
                   f"{d.get('phash_max_distance')}, semantic cosine >= {d.get('semantic_threshold')}"
                   f"{', evaluation sets excluded: ' + str(len(d.get('exclude_near'))) if d.get('exclude_near') else ''}.")
    return out or ["- Not recorded."]


def _fmt_optouts(info: dict[str, Any]) -> list[str]:
    cfg = info["config"]
    crawl = (cfg.get("sources") or {}).get("crawl") or {}
    dl = cfg.get("download") or {}
    pages, reasons = info["pages"], info["reasons"]
    out = [
        f"- robots.txt: {'honoured' if crawl.get('respect_robots', True) and dl.get('respect_robots', True) else 'NOT honoured'}"
        f" for pages and images; {pages.get('robots_disallowed', 0)} page(s) were never fetched because of it.",
        f"- Page-level `<meta name=robots>` opt-outs (noai, noimageai, noml, noindex, noimageindex): "
        f"{pages.get('meta_noai', 0)} page(s) withheld all their pairs.",
        f"- Image-level `X-Robots-Tag` directives honoured: {', '.join(dl.get('disallowed_header_directives') or []) or 'none'}.",
    ]
    if "download" in reasons:
        out.append(f"- {reasons['download']} image(s) failed or were refused at download (including robots and "
                   "X-Robots-Tag refusals, see `error_message` in `shards/*.parquet`).")
    prov = info.get("provenance") or {}
    on = "honoured" if dl.get("respect_image_metadata", True) else "NOT honoured"
    out.append(f"- Opt-outs in the images' own metadata (IPTC/PLUS Data Mining, C2PA/CAWG training-mining): {on}; "
               f"Spawning ai.txt: {'honoured' if dl.get('respect_ai_txt', True) else 'NOT honoured'}.")
    for kind, n in (prov.get("refused") or Counter()).most_common():
        out.append(f"  - refused by {kind}: {n:,} image(s)")
    if prov.get("ai_generated") is not None:
        out.append(f"- AI-generated according to their IPTC/C2PA metadata: {prov['ai_generated']:,} kept sample(s).")
    if prov.get("licences"):
        out.append("- Licences of the kept samples (image metadata, else the page): "
                   + ", ".join(f"{k} {v:,}" for k, v in prov["licences"].items()) + ".")
    out.append("- Removal requests: contact the maintainers of this dataset with the image URL; the sample's `key` identifies it in every file.")
    return out


def render(info: dict[str, Any], pretty_name: str | None = None, license_id: str = "unknown") -> str:
    meta = header(info, pretty_name, license_id)
    m, fun = info["manifest"], info["funnel"]
    runs = m.get("runs", [])
    dates = [r.get("time") for r in runs if r.get("time")]
    found = info["found"]
    lines = ["---", _yaml(meta).rstrip(), "---", "", f"# {meta['pretty_name']}", ""]
    lines += [f"Image-text pairs collected from the web and filtered with CLIP by "
              f"[clipcrawl](https://github.com/clipcrawl/clipcrawl): **{info['kept']:,}** kept samples of "
              f"{fun.get('candidates', 0):,} candidates, from {info['domains']:,} image host(s), in "
              f"{len(m.get('shards', {}))} shard(s) written by {len(runs)} run(s).", ""]
    lines += ["## Files", "",
              "- `samples/NNNNN.parquet`: one row per kept sample (url, caption, key, sizes, provenance, scores); "
              "the default config of `load_dataset`.",
              "- `shards/NNNNN.tar`: WebDataset shards (`<key>.jpg`, `<key>.txt` caption, `<key>.json` metadata) "
              "for training, e.g. with open_clip (`shards/sizes.json` has the counts).",
              "- `shards/NNNNN.parquet`: every candidate row, kept or dropped, with `status` and `error_message`."]
    if info["embeddings"]:
        lines.append("- `embeddings/`: CLIP image and caption embeddings in clip-retrieval's layout.")
    if info["index"]:
        lines.append("- `index/`: a faiss kNN index over the image embeddings (clip-retrieval back-end layout).")
    lines += ["", "```python", "from datasets import load_dataset", "",
              'meta = load_dataset("path/to/this/folder", split="train")  # samples/*.parquet']
    if info["tars"]:
        lines.append('images = load_dataset("webdataset", data_files="path/to/this/folder/shards/*.tar", '
                     'split="train")  # jpg, txt, json')
    lines += ["```", ""]
    if info["tars"]:
        lines += ["The images are read from the WebDataset tars (one builder per repository, so they are not a "
                  "second config next to the Parquet). `datasets` infers the types of the per-sample `json` from "
                  "its first values: a column that is null there (e.g. `duplicate_of`) can fail later with "
                  "\"Couldn't cast array of type ... to null\"; the typed metadata is the default config, and "
                  "`key` joins the two.", ""]
    lines += ["## Sources and dates", "", *_fmt_sources(info["config"])]
    if dates:
        lines.append(f"- Runs: {len(runs)}, from {min(dates)} to {max(dates)}.")
    if found:
        lines.append(f"- Pairs found between {found[0]:%Y-%m-%d %H:%M} and {found[1]:%Y-%m-%d %H:%M} UTC.")
    if info["sources"]:
        lines.append("- Kept samples by source: " + ", ".join(f"{k} {v:,}" for k, v in info["sources"].most_common()) + ".")
    lines += ["", "## Filtering rules and thresholds", "", *_fmt_rules(info["config"]), ""]
    lines += ["## Models", ""]
    lines += [f"- CLIP scoring and embeddings: `{x}`" for x in info["models"]] or ["- No CLIP model recorded."]
    lines += [f"- Further CLIP score `{col}`: `{m}`" for col, m in info.get("more_models", [])]
    for src in info.get("signal_sources") or []:  # curation signals and trained heads: the file/package of each
        lines += [f"- Curation signals: {part.strip()}" for part in src.split(";") if part.strip()]
    lines += ["", "## Funnel", "", "| stage | samples |", "|---|---:|", f"| candidates | {fun.get('candidates', 0):,} |"]
    lines += [f"| {s} | {fun[s]:,} |" for s in SAMPLE_STATUSES if fun.get(s)]
    if info["reasons"]:
        lines += ["", "Drops by stage: " + ", ".join(f"{k} {v:,}" for k, v in info["reasons"].most_common()) + "."]
    lines += ["", "## Opt-outs honoured", "", *_fmt_optouts(info), ""]
    lines += ["## Known limitations", "",
              "- Captions are the pages' alt text and nearby text: noisy, sometimes wrong, and not checked by people.",
              "- CLIP filtering keeps what the scoring model agrees with and inherits its biases; the threshold "
              "trades recall for precision.",
              "- `punsafe` and `pwatermark` are zero-shot estimates, not trained classifiers; filter on them with care.",
              "- Images remain the property of their owners; the license field covers this card and the metadata, "
              "not the images. Distribute URLs, or check the rights before redistributing the images.",
              "- URLs rot: a later download of the same list will find fewer images.",
              "- `page_language` is the page's declared language, not the caption's.",
              "- Deduplication is within this dataset (and the listed evaluation sets), not against other datasets.", ""]
    if any(x.startswith("clipcrawl-tiny") for x in info["models"]):
        lines.insert(-1, "- Scored with `clipcrawl-tiny`, a small test model trained on synthetic shapes: the "
                         "scores only separate the demo's shapes; rescore with a real CLIP before any use.")
    lines.append(f"_Card generated by `clipcrawl card` on {time.strftime('%Y-%m-%d', time.gmtime())}._")
    return "\n".join(lines) + "\n"


def write_card(dataset: str, pretty_name: str | None = None, license_id: str = "unknown",
               out: str | None = None) -> str:
    """Write the card (``DATASET/README.md`` unless ``out``); returns its path."""
    text = render(collect(dataset), pretty_name, license_id)
    path = out or DatasetLayout.of(dataset).p("README.md")
    with atomic_open(path, "w") as f:
        f.write(text)
    return path
