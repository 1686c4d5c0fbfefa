"""A realistic synthetic dataset in the documented layout, shared by the report tests and the screenshot.

Shape images (circles, squares, stars ... drawn with PIL) with captions that describe them
(or, for the CLIP-dropped ones, describe something else), a range of statuses with
error messages like the stages write, three shards over two runs, crawl pages/pairs,
runs/NNNN/{config.yaml,run.json}, manifest.json and a ``shards/dropped/`` tar for shard 0.
"""

from __future__ import annotations

import io
import json
import math
import random
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clipcrawl.schemas.keys import sample_key, shard_name
from clipcrawl.schemas.tables import PAGES, PAIRS, SAMPLES, conform

THRESHOLD = 0.28
COLORS = {"red": (220, 50, 47), "green": (60, 160, 80), "blue": (38, 110, 210), "yellow": (235, 200, 40),
          "purple": (130, 70, 170), "orange": (240, 130, 30), "black": (30, 30, 30)}
BACKGROUNDS = {"white": (250, 250, 250), "grey": (170, 170, 175), "light blue": (200, 225, 245),
               "beige": (240, 230, 205)}
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")
DOMAINS = ("img.shapes-gallery.com", "cdn.geometry-pics.org", "static.artboard.net", "i.pictures.co.uk",
           "media.formes.fr", "www.formen-bilder.de", "photos.example.jp")
LANGS = ("en", "en", "en", "en-US", "de", "fr", "es", "ja", None)
DOWNLOAD_ERRORS = ("HTTP 404 for {url}", "HTTP 403 for {url}", "timeout after 10.0s",
                   "robots.txt disallows {url}", "X-Robots-Tag noai", "connection reset by peer (errno 104)")
RESIZE_ERRORS = ("image too small ({w}x{h} < 64)", "cannot identify image file", "aspect ratio {r} > 3.0")
TEXT_ERRORS = ("too few words ({n} < 2)", "generic caption 'IMG_{n}.jpg'", "caption is a URL")


@dataclass
class DemoDataset:
    root: Path
    samples: pa.Table  # every row, as written to the shard Parquet files
    threshold: float = THRESHOLD


def draw(shape: str, color: str, bg: str, size: int = 256, rng: random.Random | None = None) -> bytes:
    """A JPEG of one coloured shape on a background."""
    from PIL import Image, ImageDraw

    rng = rng or random.Random(0)
    im = Image.new("RGB", (size, size), BACKGROUNDS[bg])
    d = ImageDraw.Draw(im)
    c, r = size / 2 + rng.uniform(-20, 20), size * rng.uniform(0.22, 0.36)
    box = [c - r, c - r, c + r, c + r]
    fill = COLORS[color]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "ring":
        d.ellipse(box, outline=fill, width=int(r / 3))
    elif shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "triangle":
        d.polygon([(c, c - r), (c + r, c + r), (c - r, c + r)], fill=fill)
    elif shape == "cross":
        w = r / 3
        d.rectangle([c - w, c - r, c + w, c + r], fill=fill)
        d.rectangle([c - r, c - w, c + r, c + w], fill=fill)
    else:  # star
        pts = [(c + (r if i % 2 == 0 else r / 2.3) * math.sin(i * math.pi / 5),
                c - (r if i % 2 == 0 else r / 2.3) * math.cos(i * math.pi / 5)) for i in range(10)]
        d.polygon(pts, fill=fill)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _status(rng: random.Random) -> str:
    x = rng.random()
    for status, p in (("failed_to_download", 0.12), ("failed_to_resize", 0.16), ("filtered_text", 0.22),
                      ("failed_to_score", 0.23), ("filtered_clip", 0.40), ("duplicate", 0.47)):
        if x < p:
            return status
    return "success"


def _row(i: int, rng: random.Random, shard: str, run: int) -> tuple[dict, tuple[str, str, str]]:
    shape, color, bg = rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(list(BACKGROUNDS))
    status = _status(rng)
    domain = rng.choices(DOMAINS, weights=(30, 20, 15, 10, 8, 7, 5))[0]
    url = f"https://{domain}/images/{i // 100}/{shape}-{color}-{i}.jpg"
    caption = rng.choice([f"a {color} {shape} on a {bg} background", f"{color} {shape}",
                          f"A simple {color} {shape} drawn on {bg} paper, flat illustration",
                          f"photo of a {shape} in {color}"])
    if status == "filtered_clip":  # the caption describes another picture
        caption = rng.choice(["sunset over the mountains", f"a {rng.choice(list(COLORS))} car parked outside",
                              "my cat sleeping on the sofa", f"{rng.choice(SHAPES)}s in a row"])
    if status == "filtered_text":
        caption = rng.choice(["image", f"IMG_{rng.randint(1000, 9999)}.jpg", "photo", url])
    w, h = rng.choice([(640, 480), (1024, 768), (800, 800), (1920, 1080), (300, 450), (256, 256), (2048, 1365),
                       (120, 90), (4000, 3000), (500, 1500)])
    row = {"url": url, "caption": caption, "key": sample_key(url, caption), "status": status,
           "page_url": f"https://{domain}/gallery/{i // 50}.html", "source": "crawl", "caption_source": "alt",
           "page_title": f"{shape.title()} gallery", "page_language": rng.choice(LANGS), "shard": shard, "run": run}
    if status == "failed_to_download":
        row["error_message"] = "download: " + rng.choice(DOWNLOAD_ERRORS).format(url=url)
        return row, (shape, color, bg)
    row.update(original_width=w, original_height=h, width=256, height=256, mime_type="image/jpeg",
               bytes=rng.randint(20_000, 900_000), http_status=200, sha256=f"{rng.getrandbits(256):064x}")
    if status == "failed_to_resize":
        row["error_message"] = "resize: " + rng.choice(RESIZE_ERRORS).format(w=w // 20, h=h // 20, r=round(w / h, 2))
        row.update(width=None, height=None)
        return row, (shape, color, bg)
    if status == "filtered_text":
        row["error_message"] = "text_filter: " + rng.choice(TEXT_ERRORS).format(n=rng.randint(0, 9999))
        return row, (shape, color, bg)
    if status == "failed_to_score":
        row["error_message"] = "clip: cannot read image"
        return row, (shape, color, bg)
    row["clip_model"] = "ViT-B-32/openai"
    if status == "filtered_clip":
        row["clip_similarity"] = min(THRESHOLD - 0.001, rng.gauss(0.21, 0.035))
        row["error_message"] = f"clip: similarity {row['clip_similarity']:.4f} < {THRESHOLD}"
    else:
        row["clip_similarity"] = next(x for x in iter(lambda: rng.gauss(0.32, 0.03), None) if x >= THRESHOLD)
    row["punsafe"] = rng.betavariate(1, 25)
    row["pwatermark"] = rng.betavariate(1.2, 6)
    if status == "duplicate":
        row["dedup_method"] = rng.choice(("url", "sha256", "sha256", "phash", "phash", "phash", "semantic"))
        row["duplicate_of"] = f"{rng.getrandbits(80):020x}"
        row["error_message"] = f"dedup: {row['dedup_method']} duplicate of {row['duplicate_of']}"
    return row, (shape, color, bg)


def _table(rows, schema: pa.Schema) -> pa.Table:
    """Rows with missing keys -> a table of ``schema`` (from_pylist infers from the first row only)."""
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(mtime)
    tf.addfile(info, io.BytesIO(data))


def make_demo_dataset(root: Path, n: int = 600, shards: int = 3, seed: int = 7) -> DemoDataset:
    """Write the demo dataset under ``root`` and return it."""
    rng = random.Random(seed)
    root = Path(root)
    sdir = root / "shards"
    (sdir / "dropped").mkdir(parents=True, exist_ok=True)
    t0 = 1_717_000_000.0
    per = -(-n // shards)
    tables = []
    for s in range(shards):
        name = shard_name(s)
        run = 1 if s < shards - 1 else 2
        rows, looks = zip(*[_row(i, rng, name, run) for i in range(s * per, min(n, (s + 1) * per))])
        table = conform(_table(rows, SAMPLES), SAMPLES)
        pq.write_table(table, sdir / f"{name}.parquet")
        tables.append(table)
        start = t0 + s * 400 + (3600 if run == 2 else 0)
        with tarfile.open(sdir / f"{name}.tar", "w") as tf:
            for row, look in zip(rows, looks):
                if row["status"] == "success":
                    _tar_add(tf, f"{row['key']}.jpg", draw(*look, rng=rng), start)
                    _tar_add(tf, f"{row['key']}.txt", row["caption"].encode(), start)
                    meta = {k: v for k, v in row.items() if k not in ("caption",)}
                    _tar_add(tf, f"{row['key']}.json", json.dumps(meta).encode(), start)
        if s == 0:  # a writer that keeps dropped images: only shard 0 has them
            with tarfile.open(sdir / "dropped" / f"{name}.tar", "w") as tf:
                for row, look in zip(rows, looks):
                    if row["status"] == "filtered_clip":
                        _tar_add(tf, f"{row['key']}.jpg", draw(*look, rng=rng), start)
        counts = {st: sum(1 for r in rows if r["status"] == st) for st in {r["status"] for r in rows}}
        dur = 120.0 + 60 * s
        stats = {"shard": name, "count": len(rows), "successes": counts.get("success", 0),
                 **{k: v for k, v in counts.items() if k != "success"}, "duration": dur, "start_time": start,
                 "end_time": start + dur, "bytes_downloaded": sum(r.get("bytes") or 0 for r in rows),
                 "status_dict": counts}
        (sdir / f"{name}_stats.json").write_text(json.dumps(stats))
    samples = pa.concat_tables(tables)
    _crawl(root, samples, rng)
    _runs(root, samples, t0)
    return DemoDataset(root=root, samples=samples)


def _crawl(root: Path, samples: pa.Table, rng: random.Random) -> None:
    (root / "crawl" / "pairs").mkdir(parents=True, exist_ok=True)
    (root / "crawl" / "pages").mkdir(parents=True, exist_ok=True)
    pairs = samples.select([c for c in PAIRS.names if c in samples.column_names])
    extra = [{"key": sample_key(f"https://{DOMAINS[0]}/x/{i}.png", "not downloaded yet"),
              "url": f"https://{DOMAINS[0]}/x/{i}.png", "caption": "not downloaded yet", "source": "crawl"}
             for i in range(40)]
    pairs = pa.concat_tables([conform(pairs, PAIRS), conform(_table(extra, PAIRS), PAIRS)])
    pq.write_table(pairs, root / "crawl" / "pairs" / "00000.parquet")
    page_urls = sorted(set(samples.column("page_url").to_pylist()))
    pages = []
    for u in page_urls:
        pages.append({"url": u, "status": "ok", "http_status": 200, "n_pairs": 10, "language": "en"})
    for i in range(25):
        st = rng.choice(["robots_disallowed", "http_error", "fetch_error", "not_html", "meta_noai"])
        msg = {"http_error": f"HTTP {rng.choice([404, 500, 503])} for https://{DOMAINS[1]}/p/{i}",
               "fetch_error": f"timeout after {rng.randint(5, 30)}s", "robots_disallowed": "robots.txt",
               "not_html": "content type image/png", "meta_noai": "meta robots noai"}[st]
        pages.append({"url": f"https://{DOMAINS[1]}/p/{i}", "status": st, "error_message": f"crawl: {msg}"})
    pq.write_table(conform(_table(pages, PAGES), PAGES), root / "crawl" / "pages" / "00000.parquet")


def _runs(root: Path, samples: pa.Table, t0: float) -> None:
    """runs/NNNN/{config.yaml,run.json} and manifest.json in the formats clipcrawl.pipelines.run/dataset write."""
    run_col, status_col = samples.column("run").to_pylist(), samples.column("status").to_pylist()
    shard_col = samples.column("shard").to_pylist()
    entries, shards = [], {}
    for r in sorted(set(run_col)):
        d = root / "runs" / f"{r:04d}"
        d.mkdir(parents=True, exist_ok=True)
        d.joinpath("config.yaml").write_text(
            f"dataset: {root}\nsources:\n  crawl:\n    seeds: [https://{DOMAINS[0]}/]\n"
            f"filters:\n  clip:\n    threshold: {THRESHOLD}\n")
        start = t0 + (r - 1) * 3600
        names = sorted({s for s, x in zip(shard_col, run_col) if x == r})
        counts = {}
        for st, x in zip(status_col, run_col):
            if x == r:
                counts[st] = counts.get(st, 0) + 1
        d.joinpath("run.json").write_text(json.dumps(
            {"run": r, "state": "done", "started": start, "finished": start + 1500, "config_sha256": "0" * 64,
             "planned_shards": names, "published_shards": names, "counts": counts,
             "timings": {"collect": 300.0, "process": 1150.0, "publish": 50.0}, "error": None}))
        for name in names:
            n = sum(1 for s in shard_col if s == name)
            kept = sum(1 for s, st in zip(shard_col, status_col) if s == name and st == "success")
            shards[name] = {"run": r, "samples_total": n, "samples_kept": kept, "tar_bytes": 0}
        entries.append({"run": r, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 1500)),
                        "shards": names, "shards_added": len(names),
                        "samples_total": sum(shards[n]["samples_total"] for n in names),
                        "samples_kept": sum(shards[n]["samples_kept"] for n in names), "config_hash": "0" * 64,
                        "summary": {}})
    manifest = {"format": "clipcrawl-dataset", "format_version": 1, "version": len(entries),
                "updated": entries[-1]["time"], "shards_dir": "shards", "samples_dir": "samples",
                "totals": {"runs": len(entries), "shards": len(shards),
                           "samples_total": sum(v["samples_total"] for v in shards.values()),
                           "samples_kept": sum(v["samples_kept"] for v in shards.values())},
                "runs": entries, "shards": shards}
    (root / "manifest.json").write_text(json.dumps(manifest))
