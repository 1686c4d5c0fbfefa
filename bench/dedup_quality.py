"""Dedup quality: recall and precision of pHash, semantic and their combination on a variant set.

Sources: the real photos in /work/shared/testdata/images/photos (and 160/256 px tiles cut from
them, distinct but alike, e.g. star-field tiles), plus generated images (shapes, smooth noise
textures, sinusoid gradients, text-like line patterns). Each source gets variants: resize
(x0.3-1.5), JPEG re-encode (q 50-95), crop (<= 10% of each side in total), colour/brightness/
contrast shift (+-15%), and a combo of all four. A group = a source and its variants.

Metrics, per method and threshold:
* pair recall by transformation: fraction of (source, variant) pairs within the threshold;
* pair precision: over all pairs the method links, the fraction inside one group;
* dedup (operational): run MarkDuplicates on the shuffled set: recall = correctly dropped /
  (sum of group sizes - 1), precision = dropped rows whose duplicate_of is in their own group;
  by kind: variant rows that end in the same duplicate group as their source. The perceptual rows
  run the shipped rule (pHash within k + crop-window candidates, all verified on thumbnails) and,
  under "pHash only", the plain pHash rule (no crop candidates, no verification).

    python bench/dedup_quality.py [--generated 600] [--variants 4] [--model tiny] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
from dataclasses import dataclass

import numpy as np

PHOTOS = os.environ.get("CLIPCRAWL_TESTDATA", "/work/shared/testdata") + "/images/photos"
KINDS = ("resize", "jpeg", "crop", "color", "combo")


# ---------------------------------------------------------------- the variant set
def generated_image(seed: int):
    from PIL import Image, ImageDraw

    r = random.Random(seed)
    w, h = r.choice([(256, 256), (320, 240), (240, 320), (400, 300)])
    kind = seed % 4
    if kind == 0:  # flat shapes
        im = Image.new("RGB", (w, h), tuple(r.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(im)
        for _ in range(r.randint(3, 12)):
            x0, y0 = r.randrange(w), r.randrange(h)
            box = (x0, y0, x0 + r.randint(10, w // 2), y0 + r.randint(10, h // 2))
            (d.ellipse if r.random() < 0.5 else d.rectangle)(box, fill=tuple(r.randrange(256) for _ in range(3)))
        return im
    g = np.random.default_rng(seed)
    if kind == 1:  # smooth noise texture
        a = g.random((r.randint(3, 12), r.randint(3, 12), 3)) * 255
        return Image.fromarray(a.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    if kind == 2:  # sinusoid gradients
        x, y = np.linspace(0, 1, w)[None, :], np.linspace(0, 1, h)[:, None]
        ch = [np.sin(2 * np.pi * (g.uniform(0.2, 4) * x * np.cos(t) + g.uniform(0.2, 4) * y * np.sin(t))
                     + g.uniform(0, 6)) * 0.5 + 0.5 for t in g.uniform(0, np.pi, 3)]
        return Image.fromarray((np.stack(ch, -1) * 255).astype(np.uint8))
    im = Image.new("RGB", (w, h), (255, 255, 255))  # text-like lines
    d = ImageDraw.Draw(im)
    yy = r.randint(5, 30)
    while yy < h - 10:
        x = r.randint(5, 30)
        while x < w - 20:
            n = r.randint(8, 40)
            d.rectangle((x, yy, x + n, yy + r.randint(4, 9)), fill=(0, 0, 0))
            x += n + r.randint(4, 10)
        yy += r.randint(12, 30)
    return im


def photo_sources(max_tiles: int | None = None) -> list:
    from PIL import Image

    if not os.path.isdir(PHOTOS):
        return []
    out = []
    for name in sorted(os.listdir(PHOTOS)):
        with Image.open(os.path.join(PHOTOS, name)) as im:
            im.load()
            im = im.convert("RGB")
        out.append(im)
        w, h = im.size
        for t in (160, 256):
            out += [im.crop((x, y, x + t, y + t)) for x in range(0, w - t + 1, t) for y in range(0, h - t + 1, t)]
    return out[:max_tiles] if max_tiles else out


def encode(im, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variant(im, kind: str, r: random.Random):
    from PIL import Image, ImageEnhance

    def resize(im):
        s = r.uniform(0.3, 1.5)
        return im.resize((max(16, int(im.width * s)), max(16, int(im.height * s))), Image.Resampling.BICUBIC)

    def crop(im):
        w, h = im.size
        fx, fy = r.uniform(0.02, 0.10), r.uniform(0.0, 0.10)
        dx, dy = int(w * fx), int(h * fy)
        left, top = r.randint(0, dx), r.randint(0, dy)
        return im.crop((left, top, w - (dx - left), h - (dy - top)))

    def color(im):
        im = ImageEnhance.Brightness(im).enhance(r.uniform(0.85, 1.15))
        im = ImageEnhance.Color(im).enhance(r.uniform(0.85, 1.15))
        return ImageEnhance.Contrast(im).enhance(r.uniform(0.9, 1.1))

    if kind == "resize":
        return encode(resize(im))
    if kind == "jpeg":
        return encode(im, r.randint(50, 95))
    if kind == "crop":
        return encode(crop(im))
    if kind == "color":
        return encode(color(im))
    return encode(color(crop(resize(im))), r.randint(50, 95))


@dataclass
class VariantSet:
    images: list[bytes]
    group: np.ndarray  # source id per image
    kind: list[str]  # "source" or a variant kind
    sizes: list[tuple[int, int]]


def make_variant_set(n_generated: int = 600, variants: int = 4, seed: int = 0, max_photo: int | None = None) -> VariantSet:
    r = random.Random(seed)
    sources = photo_sources(max_photo) + [generated_image(seed * 100_000 + i) for i in range(n_generated)]
    images, group, kind, sizes = [], [], [], []
    for g, im in enumerate(sources):
        images.append(encode(im))
        group.append(g)
        kind.append("source")
        sizes.append(im.size)
        for v in range(variants):
            k = KINDS[(g + v) % len(KINDS)]
            images.append(variant(im, k, r))
            group.append(g)
            kind.append(k)
            sizes.append(im.size)
    return VariantSet(images, np.array(group), kind, sizes)


# ---------------------------------------------------------------- evaluation
def _pair_metrics(a: np.ndarray, b: np.ndarray, vs: VariantSet) -> dict:
    same = vs.group[a] == vs.group[b]
    n_pos = int(sum(c * (c - 1) // 2 for c in np.bincount(vs.group)))
    tp = int(same.sum())
    return {"linked_pairs": len(a), "true_pairs": tp, "false_pairs": int(len(a) - tp),
            "pair_precision": round(tp / len(a), 4) if len(a) else 1.0,
            "pair_recall_all": round(tp / n_pos, 4) if n_pos else 1.0}


def _recall_by_kind(linked: set, vs: VariantSet) -> dict:
    src = {int(g): i for i, (g, k) in enumerate(zip(vs.group, vs.kind)) if k == "source"}
    out = {}
    for kind in KINDS:
        rows = [i for i, k in enumerate(vs.kind) if k == kind]
        if rows:
            hit = sum((min(i, src[int(vs.group[i])]), max(i, src[int(vs.group[i])])) in linked for i in rows)
            out[kind] = round(hit / len(rows), 4)
    return out


def _dedup_metrics(vs: VariantSet, phash_k: int | None, tau: float | None, emb: np.ndarray | None,
                   **options) -> dict:
    import pyarrow as pa

    from clipcrawl.filters.dedup import MarkDuplicates
    from clipcrawl.schemas.config import DedupConfig

    n = len(vs.images)
    perm = np.random.default_rng(1).permutation(n)  # sources are not always first
    cols = {"url": [f"http://x/{i}.jpg" for i in perm], "caption": [f"c{i}" for i in perm],
            "key": [f"{i:020d}" for i in perm], "status": ["success"] * n, "error_message": [None] * n,
            "image": [vs.images[i] for i in perm]}
    if emb is not None:
        cols["image_embedding"] = pa.array(list(emb[perm]), pa.list_(pa.float32()))
    cfg = DedupConfig(url=False, sha256=False, pixels=phash_k is not None, phash=phash_k is not None,
                      phash_max_distance=phash_k or 0, semantic=tau is not None,
                      semantic_threshold=tau or 0.9, index=False, **options)
    out = MarkDuplicates(cfg)(pa.table(cols))
    dup = [(int(k), int(d)) for k, d, s in zip(out["key"].to_pylist(), out["duplicate_of"].to_pylist(),
                                              out["status"].to_pylist()) if s == "duplicate"]
    good = sum(vs.group[k] == vs.group[d] for k, d in dup)
    should = int(sum(c - 1 for c in np.bincount(vs.group)))
    rep = dict(dup)  # representative of every row: follow duplicate_of to a kept row

    def root(i: int) -> int:
        while i in rep:
            i = rep[i]
        return i

    src = {int(g): i for i, (g, k) in enumerate(zip(vs.group, vs.kind)) if k == "source"}
    by_kind = {}
    for kind in KINDS:  # variant rows that ended in the same duplicate group as their source
        rows = [i for i, k in enumerate(vs.kind) if k == kind]
        if rows:
            by_kind[kind] = round(sum(root(i) == root(src[int(vs.group[i])]) for i in rows) / len(rows), 4)
    return {"dropped": len(dup), "dedup_recall": round(good / should, 4),
            "dedup_precision": round(good / len(dup), 4) if dup else 1.0, "dedup_recall_by_kind": by_kind}


def evaluate(vs: VariantSet, ks=(4, 6, 8, 10, 12), taus=(0.9, 0.95), emb: np.ndarray | None = None,
             combo: tuple[int, float] | None = None) -> dict:
    from clipcrawl.filters.dedup.hamming import self_join
    from clipcrawl.filters.dedup.hashes import image_hashes
    from clipcrawl.filters.dedup.semantic import self_pairs

    hashes = [image_hashes(b) for b in vs.images]
    ok = np.array([h.phash is not None for h in hashes])
    codes = np.array([h.phash or 0 for h in hashes], dtype=np.uint64)
    rows = np.flatnonzero(ok)
    res: dict = {"images": len(vs.images), "groups": int(vs.group.max()) + 1, "phash": {}, "semantic": {}}
    phash_links: dict[int, set] = {}
    for k in ks:
        p = self_join(codes[rows], k)
        a, b = rows[p.a], rows[p.b]
        phash_links[k] = set(zip(a.tolist(), b.tolist()))
        res["phash"][k] = {**_pair_metrics(a, b, vs), "recall_by_kind": _recall_by_kind(phash_links[k], vs),
                           "pHash only": _dedup_metrics(vs, k, None, None, phash_crops=False, phash_verify_threshold=0),
                           **_dedup_metrics(vs, k, None, None)}
    sem_links: dict[float, set] = {}
    if emb is not None:
        for tau in taus:
            p = self_pairs(emb, tau)
            sem_links[tau] = set(zip(p.a.tolist(), p.b.tolist()))
            res["semantic"][tau] = {**_pair_metrics(p.a, p.b, vs), "recall_by_kind": _recall_by_kind(sem_links[tau], vs),
                                    **_dedup_metrics(vs, None, tau, emb)}
        if combo is not None:
            k, tau = combo
            if k not in phash_links:
                p = self_join(codes[rows], k)
                phash_links[k] = set(zip(rows[p.a].tolist(), rows[p.b].tolist()))
            if tau not in sem_links:
                p = self_pairs(emb, tau)
                sem_links[tau] = set(zip(p.a.tolist(), p.b.tolist()))
            links = phash_links[k] | sem_links[tau]
            arr = np.array(sorted(links), dtype=np.int64).reshape(-1, 2)
            res["combination"] = {"phash_k": k, "tau": tau, **_pair_metrics(arr[:, 0], arr[:, 1], vs),
                                  "recall_by_kind": _recall_by_kind(links, vs), **_dedup_metrics(vs, k, tau, emb)}
    return res


def clip_embeddings(vs: VariantSet, model: str, pretrained: str | None) -> tuple[np.ndarray, str] | None:
    try:
        from clipcrawl.filters.dedup.embed import ImageEmbedder

        e = ImageEmbedder(model, pretrained, device="cpu").embed(vs.images)
        return e.emb, e.model
    except Exception as ex:  # noqa: BLE001 - model unavailable: report and go on with pHash only
        print(f"semantic skipped: cannot load CLIP model {model!r}: {ex}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generated", type=int, default=600)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--ks", default="4,6,8,10,12")
    ap.add_argument("--taus", default="0.85,0.9,0.95")
    ap.add_argument("--combo", default="8,0.95", help="k,tau of the pHash+semantic combination")
    ap.add_argument("--out", default=None)
    ap.add_argument("--emb-cache", default=None, help="reuse embeddings saved in this .npy file")
    args = ap.parse_args(argv)
    t0 = time.time()
    vs = make_variant_set(args.generated, args.variants)
    emb = None
    model = None
    if args.emb_cache and os.path.exists(args.emb_cache):
        emb, model = np.load(args.emb_cache), args.model
    elif args.model != "none":
        got = clip_embeddings(vs, args.model, args.pretrained)
        if got is not None:
            emb, model = got
            if args.emb_cache:
                np.save(args.emb_cache, emb)
    k, tau = args.combo.split(",")
    res = evaluate(vs, [int(x) for x in args.ks.split(",")], [float(x) for x in args.taus.split(",")], emb,
                   (int(k), float(tau)))
    res["model"], res["seconds"] = model, round(time.time() - t0, 1)
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
