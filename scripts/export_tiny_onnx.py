"""Export the shipped tiny CLIP's two towers to ONNX graphs that read their weights from the safetensors file.

``clipcrawl demo`` on a core install (no torch, no open_clip) scores with these graphs through ONNX
Runtime (:mod:`clipcrawl.filters.clip.light`). The weights are not duplicated: every fp32
initializer of the exported graph whose values are exactly a tensor of
``clipcrawl-tiny.safetensors`` (fp16, possibly transposed) becomes an fp16 *external data*
initializer pointing into that file (ONNX ``location``/``offset``/``length``; safetensors is an
8-byte header length, a JSON header and raw little-endian tensors), followed by ``Cast`` to float
(and ``Transpose`` where the exporter folded one in). What stays inline are small constants (the
causal mask, shape constants), so the two graph files together are a few hundred KB.

Needs the ``[clip]`` extra (torch, open_clip, onnx). Usage::

    python scripts/export_tiny_onnx.py            # writes clipcrawl/assets/tiny_clip/*.onnx
    python scripts/export_tiny_onnx.py --check    # re-export to a temp dir, compare with the shipped files

The graphs are checked against open_clip's fp32 model before they are written (max |cosine
similarity difference| on generated pictures and captions, must stay under 1e-4).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY_DIR = ROOT / "clipcrawl" / "assets" / "tiny_clip"
SAFETENSORS = "clipcrawl-tiny.safetensors"
MIN_EXTERNAL = 256  # initializers with fewer elements stay inline
TOLERANCE = 1e-4


def safetensors_index(path: Path) -> dict[tuple, tuple[int, int]]:
    """(shape, fp16 bytes) -> (absolute offset, length) of every F16 tensor of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out: dict[tuple, tuple[int, int]] = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F16":
            continue
        begin, end = meta["data_offsets"]
        out[(tuple(meta["shape"]), raw[base + begin : base + end])] = (base + begin, end - begin)
    return out


def rewrite(onnx_path: Path, index: dict[tuple, tuple[int, int]], location: str) -> dict[str, int]:
    """Point every initializer found in ``index`` at the safetensors file (fp16 + Cast [+ Transpose])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_path))
    g = model.graph
    keep, prefix, stats = [], [], {"external": 0, "inline": 0, "inline_bytes": 0}
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        hit = None
        if arr.dtype == np.float32 and arr.size >= MIN_EXTERNAL:
            half = arr.astype(np.float16)
            if np.array_equal(half.astype(np.float32), arr):
                for cand, perm in ((half, None), (half.T, (1, 0)) if half.ndim == 2 else (None, None)):
                    if cand is None:
                        continue
                    key = (tuple(cand.shape), np.ascontiguousarray(cand).astype("<f2").tobytes())
                    if key in index:
                        hit = (cand.shape, index[key], perm)
                        break
        if hit is None:
            keep.append(init)
            stats["inline"] += 1
            stats["inline_bytes"] += arr.nbytes
            continue
        shape, (offset, length), perm = hit
        t = TensorProto()
        t.name = f"{init.name}__f16"
        t.data_type = TensorProto.FLOAT16
        t.dims.extend(shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
        keep.append(t)
        if perm is None:
            prefix.append(helper.make_node("Cast", [t.name], [init.name], to=TensorProto.FLOAT))
        else:
            prefix.append(helper.make_node("Cast", [t.name], [f"{init.name}__f32t"], to=TensorProto.FLOAT))
            prefix.append(helper.make_node("Transpose", [f"{init.name}__f32t"], [init.name], perm=list(perm)))
        stats["external"] += 1
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = prefix + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    model.doc_string = (f"clipcrawl-tiny {onnx_path.stem}: fp16 weights read from {location} "
                        "(scripts/export_tiny_onnx.py)")
    onnx.save(model, str(onnx_path))
    return stats


def export(out_dir: Path) -> dict[str, dict[str, int]]:
    """Export both towers into ``out_dir`` (which must hold the safetensors file next to them)."""
    from clipcrawl.filters.clip.model import load_clip
    from clipcrawl.filters.clip.onnx_export import export_towers

    clip = load_clip("tiny", None, device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        img, txt = export_towers(clip, Path(tmp))
        index = safetensors_index(out_dir / SAFETENSORS)
        stats = {}
        for src, name in ((img, "clipcrawl-tiny.image.onnx"), (txt, "clipcrawl-tiny.text.onnx")):
            dst = out_dir / name
            dst.write_bytes(src.read_bytes())
            stats[name] = rewrite(dst, index, SAFETENSORS)
    return stats


def compare(onnx_dir: Path) -> float:
    """Max |cosine difference| between the ONNX towers in ``onnx_dir`` and open_clip fp32."""
    import torch

    from clipcrawl.filters.clip.encoders import make_encoder
    from clipcrawl.filters.clip.light import load_light_tiny
    from clipcrawl.filters.clip.model import load_clip

    ref = load_clip("tiny", None, device="cpu", precision="fp32")
    light = load_light_tiny(onnx_dir)
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(8, 3, 64, 64)).astype(np.float32)
    captions = ["a red circle", "a blue square on a white background", "a photo of a cat", "yellow star",
                "", "a green triangle in the top left corner of a grey picture", "x" * 300, "dog"]
    with torch.no_grad():
        ri = torch.nn.functional.normalize(ref.model.encode_image(torch.from_numpy(pixels)), dim=-1).numpy()
        rt = torch.nn.functional.normalize(ref.model.encode_text(ref.tokenizer(captions)), dim=-1).numpy()
    enc = make_encoder(light)
    li, lt = enc.encode_images(pixels), enc.encode_texts(light.tokenizer(captions))
    return float(max(np.abs(ri @ rt.T - li @ lt.T).max(), np.abs(ri - li).max(), np.abs(rt - lt).max()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="export to a temp dir and compare with the shipped graphs")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / SAFETENSORS).symlink_to(TINY_DIR / SAFETENSORS)
            export(d)
            for name in ("clipcrawl-tiny.image.onnx", "clipcrawl-tiny.text.onnx"):
                same = (d / name).read_bytes() == (TINY_DIR / name).read_bytes()
                print(f"{name}: {'identical' if same else 'DIFFERS'} to the shipped file")
        diff = compare(TINY_DIR)
        print(f"shipped graphs vs open_clip fp32: max |diff| {diff:.2e} (tolerance {TOLERANCE:g})")
        return 0 if diff < TOLERANCE else 1
    stats = export(TINY_DIR)
    for name, s in stats.items():
        size = (TINY_DIR / name).stat().st_size
        print(f"{name}: {size} bytes, {s['external']} initializers in {SAFETENSORS}, "
              f"{s['inline']} inline ({s['inline_bytes']} bytes)")
    diff = compare(TINY_DIR)
    print(f"max |diff| vs open_clip fp32: {diff:.2e} (tolerance {TOLERANCE:g})")
    return 0 if diff < TOLERANCE else 1


if __name__ == "__main__":
    raise SystemExit(main())
