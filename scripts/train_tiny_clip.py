"""Train the tiny CLIP shipped in ``clipcrawl/assets/tiny_clip/`` (CPU, a few minutes, deterministic).

The model is a real open_clip ``CLIP`` (tiny ViT image tower + the standard open_clip text
transformer, ``SimpleTokenizer`` with its 49408-token vocabulary), so every code path that
loads it — ``open_clip.create_model_and_transforms``, ``get_tokenizer``, open_clip_train — is
the production one. It is trained on generated pictures of coloured shapes (circle, square,
triangle, star; colours, sizes, positions, backgrounds; varied image sizes and JPEG quality)
with captions from several templates, and tested on held-out generated data:

* AUC of matched vs shuffled (image, caption) pairs (must be >= 0.9), and
* AUC of matched vs *hard* mismatched captions (wrong shape or wrong colour, like the demo site).

Usage::

    python scripts/train_tiny_clip.py                  # writes clipcrawl/assets/tiny_clip/
    python scripts/train_tiny_clip.py --steps 100 --out /tmp/tiny   # quick try

The weights are saved in fp16 safetensors; total size stays under 5 MB because the text width
is 32 (the token embedding alone is 49408 x 32). After retraining, run
``python scripts/export_tiny_onnx.py``: the shipped ONNX graphs (the core install's CLIP) read their
weights from this file by offset.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_NAME = "clipcrawl-tiny"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "clipcrawl" / "assets" / "tiny_clip"

CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

from clipcrawl.assets.shapes import (  # noqa: E402 - the demo site draws the same scenes
    TEMPLATES,
    draw_scene,
    random_scene,
    wrong_caption,
)


@dataclass
class GeneratedSet:
    pixels: np.ndarray  # uint8 (N, 3, S, S): the resized + centre-cropped image, before normalisation
    captions: list[list[str]]  # per image: several captions from different templates
    hard: list[list[str]]  # per image and caption: the same template with the wrong shape or colour


def generate(n: int, seed: int, image_size: int, captions_per_image: int = 3) -> GeneratedSet:
    from torchvision import transforms as T

    rng = random.Random(seed)
    # the PIL part of open_clip's eval preprocess (Resize bicubic + CenterCrop); ToTensor/Normalize at batch time
    geom = T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)])
    pixels = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    caps, hard = [], []
    for i in range(n):
        scene = random_scene(rng)
        pixels[i] = np.asarray(geom(draw_scene(scene, rng)), dtype=np.uint8).transpose(2, 0, 1)
        templates = rng.sample(TEMPLATES, captions_per_image)
        caps.append([scene.caption(rng, t) for t in templates])
        hard.append([wrong_caption(scene, rng, t) for t in templates])
    return GeneratedSet(pixels, caps, hard)


def to_input(pixels: np.ndarray, mean, std):
    import torch

    x = torch.from_numpy(pixels).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# ---------------------------------------------------------------- evaluation
def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks of ties
    _, inv, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def evaluate(model, tokenizer, data: GeneratedSet, mean, std, seed: int) -> dict[str, float]:
    import torch

    rng = np.random.default_rng(seed)
    model.eval()
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(to_input(data.pixels, mean, std)), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokenizer([c[0] for c in data.captions])), dim=-1)
        hard = torch.nn.functional.normalize(model.encode_text(tokenizer([h[0] for h in data.hard])), dim=-1)
    n = len(data.captions)
    matched = (img * txt).sum(-1).numpy()
    perm = (np.arange(n) + rng.integers(1, n, size=n)) % n  # never the image's own caption
    shuffled = (img * txt[perm]).sum(-1).numpy()
    wrong = (img * hard).sum(-1).numpy()
    return {
        "auc_shuffled": auc(matched, shuffled),
        "auc_hard": auc(matched, wrong),
        "pairwise_hard": float((matched > wrong).mean()),
        "mean_matched": float(matched.mean()),
        "mean_shuffled": float(shuffled.mean()),
    }


# ---------------------------------------------------------------- training
def encode_text_cropped(model, text):
    """open_clip ``CLIP.encode_text`` on tokens cropped after the longest caption (same outputs)."""
    from open_clip.transformer import text_global_pool

    n = text.shape[1]
    x = model.token_embedding(text) + model.positional_embedding[:n]
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = text_global_pool(model.ln_final(x), text, model.text_pool_type)
    return x @ model.text_projection


def train(args: argparse.Namespace) -> None:
    import open_clip
    import torch
    import torch.nn.functional as F

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / f"{MODEL_NAME}.json"
    cfg_path.write_text(json.dumps(CONFIG, indent=2) + "\n")
    open_clip.add_model_config(cfg_path)
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    mean, std = model.visual.image_mean, model.visual.image_std
    size = CONFIG["vision_cfg"]["image_size"]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {MODEL_NAME}: {n_params / 1e6:.2f}M parameters; preprocess {preprocess}".replace("\n", " "))

    t0 = time.time()
    data = generate(args.train_images, args.seed, size)
    held_out = generate(args.eval_images, args.seed + 1_000_003, size)
    tokens = [tokenizer(list(c)) for c in zip(*data.captions)]  # one (N, 77) tensor per caption slot
    hard_tokens = [tokenizer(list(c)) for c in zip(*data.hard)]
    print(f"generated {args.train_images} train + {args.eval_images} held-out images in {time.time() - t0:.0f}s")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98)
    )
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )
    gen = torch.Generator().manual_seed(args.seed)
    n = args.train_images
    t0 = time.time()
    for step in range(args.steps):
        model.train()
        idx = torch.randint(0, n, (args.batch_size,), generator=gen)
        slot = int(torch.randint(0, len(tokens), (1,), generator=gen))
        pix = data.pixels[idx.numpy()]
        # the batch's captions, then one hard negative per image (its caption with a wrong shape/colour)
        text = torch.cat([tokens[slot][idx], hard_tokens[slot][idx]])
        # attention is causal and the text feature is read at the end-of-text token, so cropping the
        # padding after the longest caption gives the same outputs at a fraction of the cost
        text = text[:, : int(text.argmax(dim=-1).max()) + 1]
        img_f = F.normalize(model.encode_image(to_input(pix, mean, std)), dim=-1)
        txt_f = F.normalize(encode_text_cropped(model, text), dim=-1)
        scale = model.logit_scale.exp()
        b = len(idx)
        logits = scale * img_f @ txt_f.T  # (b, 2b)
        # identical captions can repeat in a batch (also as another image's hard negative): all are positives
        same = (text[:b].unsqueeze(1) == text.unsqueeze(0)).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss_i2t = F.cross_entropy(logits, target)
        t_same = same[:, :b]
        loss_t2i = F.cross_entropy(logits[:, :b].T, t_same.T / t_same.T.sum(1, keepdim=True))
        loss = 0.5 * (loss_i2t + loss_t2i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  scale {scale.item():.1f}  {time.time() - t0:.0f}s", flush=True)

    metrics = evaluate(model, tokenizer, held_out, mean, std, args.seed)
    print("held-out: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    save(model, out)
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"saved {out} ({total / 1e6:.2f} MB)")
    print(f"AUC matched vs shuffled: {metrics['auc_shuffled']:.4f}")
    print(f"AUC matched vs wrong shape/colour: {metrics['auc_hard']:.4f}")
    if metrics["auc_shuffled"] < 0.9:
        raise SystemExit(f"AUC {metrics['auc_shuffled']:.3f} < 0.9: train longer (--steps)")


def save(model, out: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().to(dtypes_for(v)).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / f"{MODEL_NAME}.safetensors"), metadata={"format": "pt"})  # one key: byte-identical files


def dtypes_for(t):
    import torch

    return torch.float16 if t.is_floating_point() else t.dtype


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-images", type=int, default=6000)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=100)
    train(p.parse_args())


if __name__ == "__main__":
    main()
