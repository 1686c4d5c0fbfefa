"""GPU throughput and fidelity of CLIP scoring: fp32 vs fp16/bf16 autocast vs our GPU path (run by hand).

    python bench/clip_gpu.py                                   # ViT-B-32 random init, batch 256
    python bench/clip_gpu.py --model ViT-L-14 --batch-size 128
    python bench/clip_gpu.py --model ViT-B-32 --pretrained /path/to/open_clip_pytorch_model.bin

Needs a CUDA device and no network (random weights unless --pretrained names a local file).
Paths, all on the same pixels/tokens and the same model object:

* ``fp32``: open_clip eager, ``encode_image``/``encode_text`` (77 tokens), TF32 off;
* ``fp16`` / ``bf16``: the same under ``torch.autocast`` (what ``--precision fp16|bf16`` runs);
* ``ours (fp16 + cropped text)``: clipcrawl's TorchEncoder as ``precision=auto`` picks it on a GPU.

Fidelity: max |cos - cos_fp32| over all (image, caption) pairs. Throughput: median of timed
iterations after warm-up, with ``torch.cuda.synchronize()`` around each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

CAPTIONS = [
    "a red circle on a white background", "a photo of a dog", "two cats sleeping on a sofa next to a window",
    "sunset over the mountains with a lake in the foreground and trees on the shore", "logo",
    "a man riding a bicycle down a city street at night, with neon signs and wet pavement reflecting light",
    "product photo of white sneakers", "map of europe",
]


def main() -> None:
    import torch

    from clipcrawl.filters.clip.encoders import TorchEncoder
    from clipcrawl.filters.clip.model import load_clip

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default=None, help="local checkpoint (default: random init)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (--device cpu runs the same code slowly, as a smoke test)")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    clip = load_clip(args.model, args.pretrained, device=args.device, precision="fp32")
    size = clip.model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    # smooth random pictures (not white noise), normalised like the model's preprocess
    g = torch.Generator(device="cpu").manual_seed(0)
    low = torch.rand(args.batch_size, 3, 8, 8, generator=g)
    pixels = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic").clamp(0, 1)
    mean = torch.tensor(clip.model.visual.image_mean or (0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor(clip.model.visual.image_std or (0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    pixels = ((pixels - mean) / std).to(args.device)
    tokens = clip.tokenizer((CAPTIONS * (args.batch_size // len(CAPTIONS) + 1))[: args.batch_size]).to(args.device)

    def path(precision: str, crop: bool) -> TorchEncoder:
        clip.precision = precision
        enc = TorchEncoder(clip, crop_text=crop)
        return enc

    paths = {
        "fp32": path("fp32", False),
        "fp16 autocast": path("fp16", False),
        "bf16 autocast": path("bf16", False),
        "ours (fp16 + cropped text)": path("fp16", True),
    }

    def timed(fn, x) -> float:  # noqa: ANN001
        for _ in range(2):
            fn(x)
        sync()
        ts = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            fn(x)
            sync()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    results, outs = {}, {}
    for name, enc in paths.items():
        outs[name] = (enc.encode_images(pixels), enc.encode_texts(tokens))
        results[name] = (args.batch_size / timed(enc.encode_images, pixels),
                         args.batch_size / timed(enc.encode_texts, tokens))
    ref = outs["fp32"][0] @ outs["fp32"][1].T
    dev = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"### {args.model} ({args.pretrained or 'random init'}) on {dev}, batch {args.batch_size}\n")
    print("| path | images/s | x fp32 | texts/s | x fp32 | max abs sim diff |")
    print("|---|---|---|---|---|---|")
    for name, (ips, tps) in results.items():
        diff = float(np.abs(outs[name][0] @ outs[name][1].T - ref).max())
        print(f"| {name} | {ips:,.0f} | {ips / results['fp32'][0]:.2f} | {tps:,.0f} | "
              f"{tps / results['fp32'][1]:.2f} | {diff:.4f} |")


if __name__ == "__main__":
    main()
