"""CPU throughput and fidelity of clipcrawl's fast CLIP path vs open_clip eager fp32 (same model, batch, run).

    python bench/clip_cpu.py                          # ViT-B-32 random init + the shipped tiny model
    python bench/clip_cpu.py --models ViT-B-32 --batch-size 32 --rounds 5 --threads 2

Baseline: ``model.encode_image`` / ``model.encode_text`` of open_clip in fp32 eager under
``torch.inference_mode`` (77-token text, as open_clip runs it). Ours: ``precision="fast"``
(ONNX Runtime, int8 dynamic quantization, text cropped after the longest caption) and, for
reference, the same ONNX graph without quantization. Both sides get the same preprocessed
pixels and tokens, the same thread count, and alternate round by round, so machine load hits
both alike. Fidelity: max |cos_fast - cos_fp32| over every (image, caption) pair of the run.
pairs/s = 1 / (1/images/s + 1/texts/s): the rate of the scoring stage, which runs both towers.
Pixels come from real photos in /work/shared/testdata/images when present (activations of
real images matter for int8), else from generated pictures.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CAPTIONS = [
    "a red circle on a white background",
    "a photo of a dog",
    "Grace Hopper in uniform, black and white portrait",
    "two cats sleeping on a sofa next to a window",
    "sunset over the mountains with a lake in the foreground and trees on the shore",
    "logo",
    "a bowl of fresh fruit: apples, bananas and oranges on a wooden kitchen table",
    "screenshot of a spreadsheet",
    "a man riding a bicycle down a city street at night, with neon signs and wet pavement reflecting light",
    "product photo of white sneakers",
    "a small blue star",
    "map of europe",
]


def load_pixels(preprocess, n: int, seed: int = 0) -> list:  # noqa: ANN001
    from PIL import Image, ImageDraw

    root = Path("/work/shared/testdata/images")
    imgs = []
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and len(imgs) < n:
                try:
                    with Image.open(p) as im:
                        if im.width * im.height > 40_000_000:
                            continue
                        imgs.append(preprocess(im.convert("RGB")))
                except Exception:  # noqa: BLE001 - some fixtures are deliberately broken
                    continue
    rng = np.random.default_rng(seed)
    while len(imgs) < n:  # generated pictures: gradient + shapes + noise
        a = np.linspace(0, 255, 256, dtype=np.float32)
        base = np.stack([np.add.outer(a, a * rng.uniform(0, 1)) / 2] * 3, -1) * rng.uniform(0.3, 1, 3)
        im = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for _ in range(3):
            x, y, r = rng.integers(20, 236, 3)
            d.ellipse([x - r / 3, y - r / 3, x + r / 3, y + r / 3], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        imgs.append(preprocess(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return imgs[:n]


def timed(fn, *a) -> tuple[float, object]:  # noqa: ANN001
    t0 = time.perf_counter()
    out = fn(*a)
    return time.perf_counter() - t0, out


def bench_model(name: str, pretrained: str | None, batch: int, rounds: int, threads: int) -> dict:
    import torch

    from clipcrawl.filters.clip.fast import OnnxEncoder
    from clipcrawl.filters.clip.model import load_clip
    from clipcrawl.filters.clip.towers import l2_normalize

    torch.manual_seed(0)
    clip = load_clip(name, pretrained, device="cpu", precision="fp32")
    model = clip.model
    pixels = torch.stack(load_pixels(clip.preprocess, batch))
    caps = (CAPTIONS * (batch // len(CAPTIONS) + 1))[:batch]
    tokens = clip.tokenizer(caps)
    t0 = time.perf_counter()
    fast = OnnxEncoder(clip, quantize="int8", threads=threads)
    fp32_onnx = OnnxEncoder(clip, quantize="none", threads=threads)
    setup_s = time.perf_counter() - t0

    def eager_img(x):  # noqa: ANN001, ANN202
        with torch.inference_mode():
            return l2_normalize(model.encode_image(x).numpy())

    def eager_txt(t):  # noqa: ANN001, ANN202
        with torch.inference_mode():
            return l2_normalize(model.encode_text(t).numpy())

    sides = {
        "open_clip fp32": (eager_img, eager_txt),
        "fast (onnx int8)": (fast.encode_images, fast.encode_texts),
        "onnx fp32": (fp32_onnx.encode_images, fp32_onnx.encode_texts),
    }
    times = {k: {"img": [], "txt": []} for k in sides}
    outs = {}
    for k, (fi, ft) in sides.items():  # warm-up + outputs for fidelity
        outs[k] = (fi(pixels), ft(tokens))
    for _ in range(rounds):
        for k, (fi, ft) in sides.items():
            times[k]["img"].append(timed(fi, pixels)[0])
            times[k]["txt"].append(timed(ft, tokens)[0])
    ref_i, ref_t = outs["open_clip fp32"]
    ref = ref_i @ ref_t.T
    res = {"model": f"{name}/{pretrained}" if pretrained else f"{name} (random init)", "batch": batch,
           "threads": threads, "setup_s": setup_s, "sides": {}}
    for k in sides:
        img_s = batch / statistics.median(times[k]["img"])
        txt_s = batch / statistics.median(times[k]["txt"])
        sim = outs[k][0] @ outs[k][1].T
        res["sides"][k] = {"img_s": img_s, "txt_s": txt_s, "max_diff": float(np.abs(sim - ref).max()),
                           "diag_diff": float(np.abs(np.diag(sim) - np.diag(ref)).max())}
    return res


def report(res: dict) -> str:
    base = res["sides"]["open_clip fp32"]
    lines = [f"### {res['model']}  batch {res['batch']}, {res['threads']} threads "
             f"(ONNX export+quantize once: {res['setup_s']:.0f}s)", "",
             "| path | images/s | x fp32 | texts/s | x fp32 | pairs/s | x fp32 | max abs sim diff (all pairs) |",
             "|---|---|---|---|---|---|---|---|"]

    def pairs(v: dict) -> float:  # scoring needs both towers per (image, caption) pair
        return 1.0 / (1.0 / v["img_s"] + 1.0 / v["txt_s"])

    for k, v in res["sides"].items():
        lines.append(f"| {k} | {v['img_s']:.1f} | {v['img_s'] / base['img_s']:.2f} | {v['txt_s']:.1f} | "
                     f"{v['txt_s'] / base['txt_s']:.2f} | {pairs(v):.1f} | {pairs(v) / pairs(base):.2f} | "
                     f"{v['max_diff']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="ViT-B-32,tiny", help="comma-separated; ViT-* run with random init")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    ok = True
    for name in args.models.split(","):
        res = bench_model(name, None if name != "tiny" else "shipped", args.batch_size, args.rounds, args.threads)
        print(report(res), "\n", flush=True)
        f = res["sides"]["fast (onnx int8)"]
        ok &= f["max_diff"] <= 0.01
    print("fidelity within 0.01:", "yes" if ok else "NO")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
