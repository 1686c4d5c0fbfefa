"""The core install's CLIP path: the shipped tiny model on ONNX Runtime, the vendored tokenizer and the
torch-free transform, checked against open_clip (where torch is installed), plus the demo in a process
where torch, torchvision and open_clip cannot be imported."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.filters.clip.conftest import make_table

REPO = Path(__file__).resolve().parents[3]
pytest.importorskip("onnxruntime")

CAPTIONS = [
    "a red circle", "A Blue SQUARE on a white background", "", "   spaced   out\tcaption\n",
    "café crème brûlée – 3 × 4 = 12 ½", "Tom&amp;Jerry &lt;3 it's they're we've I'm you'll he'd",
    "日本語のキャプション 東京 2024", "emoji 🐱🐶 and ZWJ 👩‍💻", "mojibake cafÃ© â€œquotedâ€\x9d",
    "numbers 1234567 and 3.14159", "x" * 400, " ".join(["word"] * 120), "<start_of_text> literal <end_of_text>",
    "Ünïcödé ΑΒΓ кириллица עברית العربية", "snake_case-and-kebab/slash\\back",
]

# a process that cannot import what the extras add (as on a core install): torch, open_clip (clip),
# faiss (index), duckdb + matplotlib (report), scipy + imagehash (dedup)
EXTRA_MODULES = ("torch", "torchvision", "open_clip", "faiss", "duckdb", "matplotlib", "scipy", "imagehash")
NO_TORCH = textwrap.dedent(f"""
    import importlib.abc, sys
    _BLOCKED = {EXTRA_MODULES!r}
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in _BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None
    sys.meta_path.insert(0, _Block())
    import importlib.util
    _orig = importlib.util.find_spec
    def _find_spec(name, package=None):
        if name.split(".")[0] in _BLOCKED:
            return None
        return _orig(name, package)
    importlib.util.find_spec = _find_spec
""")


def _no_torch_run(code: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "no_torch.py"
    script.write_text(NO_TORCH + textwrap.dedent(code))
    e = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "CLIPCRAWL_OFFLINE": "1", **(env or {})}
    e.pop("CLIPCRAWL_TINY_BACKEND", None)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=e, timeout=240, cwd=tmp_path)


def test_tokenizer_ids_equal_open_clip():
    open_clip = pytest.importorskip("open_clip")
    from clipcrawl.filters.clip.tokenizer import SimpleTokenizer

    ours = SimpleTokenizer()(CAPTIONS)
    theirs = open_clip.get_tokenizer("ViT-B-32")(CAPTIONS).numpy()
    assert ours.dtype == np.int64 and ours.shape == (len(CAPTIONS), 77)
    np.testing.assert_array_equal(ours, theirs)
    assert SimpleTokenizer()(CAPTIONS[0], context_length=8).shape == (1, 8)


def test_vocabulary_is_open_clips_file():
    open_clip = pytest.importorskip("open_clip")
    from clipcrawl.filters.clip.tokenizer import BPE_PATH

    shipped = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    assert BPE_PATH.read_bytes() == shipped.read_bytes()
    assert (BPE_PATH.parent / "LICENSE").read_text().count("MIT License") == 1


def _images():
    from PIL import Image

    rng = np.random.default_rng(7)
    out = []
    for w, h, mode in [(64, 64, "RGB"), (200, 120, "RGB"), (37, 300, "RGB"), (65, 63, "RGB"), (500, 499, "L"),
                       (90, 90, "RGBA"), (10, 7, "RGB"), (128, 64, "P")]:
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB")
        out.append(img.convert(mode) if mode != "RGB" else img)
    return out


def test_preprocess_equals_open_clip_transform(tiny_fp32):
    from clipcrawl.filters.clip.light import load_light_tiny

    light = load_light_tiny()
    for img in _images():
        rgb = img.convert("RGB")
        ref = tiny_fp32.preprocess(rgb).numpy()
        ours = light.preprocess(rgb)
        assert ours.shape == ref.shape == (3, 64, 64)
        np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


def test_towers_match_open_clip_fp32(tiny_fp32, shape_pairs):
    import torch

    from clipcrawl.filters.clip.encoders import make_encoder
    from clipcrawl.filters.clip.light import TinyOnnxEncoder, load_light_tiny
    from clipcrawl.filters.clip.prefetch import decode_image

    light = load_light_tiny()
    enc = make_encoder(light)
    assert isinstance(enc, TinyOnnxEncoder)
    pixels = np.stack([decode_image(p[0], light.preprocess) for p in shape_pairs])
    caps = [p[1] for p in shape_pairs] + [p[2] for p in shape_pairs] + CAPTIONS
    with torch.no_grad():
        ri = torch.nn.functional.normalize(tiny_fp32.model.encode_image(torch.from_numpy(pixels)), dim=-1).numpy()
        rt = torch.nn.functional.normalize(tiny_fp32.model.encode_text(tiny_fp32.tokenizer(caps)), dim=-1).numpy()
    li, lt = enc.encode_images(pixels), enc.encode_texts(light.tokenizer(caps))
    # the fast path promises 0.01 on similarities; fp32 ONNX stays far inside it
    assert np.abs(ri @ rt.T - li @ lt.T).max() < 1e-4
    assert np.abs(ri - li).max() < 1e-4 and np.abs(rt - lt).max() < 1e-4
    assert light.model.logit_scale_exp == pytest.approx(float(tiny_fp32.model.logit_scale.exp()), rel=1e-6)


def test_graph_files_are_small_and_read_weights_from_safetensors():
    onnx = pytest.importorskip("onnx")
    from clipcrawl.filters.clip.light import IMAGE_ONNX, TEXT_ONNX, TINY_DIR

    for name in (IMAGE_ONNX, TEXT_ONNX):
        path = TINY_DIR / name
        assert path.stat().st_size < 200_000
        m = onnx.load(str(path), load_external_data=False)
        ext = [t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert ext and all(dict((e.key, e.value) for e in t.external_data)["location"] == "clipcrawl-tiny.safetensors"
                           for t in ext)


def test_score_stage_on_the_onnx_path_matches_open_clip(monkeypatch, shape_pairs):
    from clipcrawl.filters.clip.score import ScoreClip
    from clipcrawl.schemas.config import ClipConfig

    table = make_table([p[0] for p in shape_pairs] + [b"not an image"], [p[1] for p in shape_pairs] + ["x"])
    sims = {}
    for backend in ("onnx", "torch"):
        if backend == "torch":
            pytest.importorskip("open_clip")
        monkeypatch.setenv("CLIPCRAWL_TINY_BACKEND", backend)
        stage = ScoreClip(ClipConfig(model="tiny", pretrained=None, precision="fp32", device="cpu", batch_size=8))
        stage.setup()
        out = stage.process(table)
        assert out.column("clip_model").to_pylist()[0] == "clipcrawl-tiny"
        assert out.column("status").to_pylist()[-1] == "failed_to_score"
        sims[backend] = np.array(out.column("clip_similarity").to_pylist()[:-1], dtype=np.float64)
        sims[backend + "_punsafe"] = np.array(out.column("punsafe").to_pylist()[:-1], dtype=np.float64)
    assert type(stage.clip.model).__name__ != "TinyOnnxModel"
    assert np.abs(sims["onnx"] - sims["torch"]).max() < 1e-4
    assert np.abs(sims["onnx_punsafe"] - sims["torch_punsafe"]).max() < 1e-3


def test_demo_runs_without_torch(tmp_path):
    out = tmp_path / "demo"
    r = _no_torch_run(f"""
        import sys
        from clipcrawl.cli import main
        rc = main(["demo", "--out", {str(out)!r}])
        assert "torch" not in sys.modules and "open_clip" not in sys.modules, "torch was imported"
        if rc:
            sys.exit(rc)
        print("STATS", main(["stats", {str(out)!r}]))
        print("INDEX", main(["index", {str(out)!r}]))
    """, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the next steps that need an extra: one line with the pip install, exit 2
    assert "STATS 2" in r.stdout and 'pip install "clipcrawl[report]"' in r.stderr
    assert "INDEX 2" in r.stdout and 'pip install "clipcrawl[index]"' in r.stderr
    assert 'add them with pip install "clipcrawl[' in r.stdout  # the demo's own note
    import pyarrow.parquet as pq

    rows = [r for f in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    scored = [r for r in rows if r.get("clip_similarity") is not None]
    assert len(scored) >= 20 and {r["clip_model"] for r in scored} == {"clipcrawl-tiny"}
    assert sum(r["status"] == "success" for r in rows) >= 20
    # pHash dedup runs without scipy (numpy DCT): the demo site's resized copy is still found
    assert any(r["status"] == "duplicate" and "pHash" in (r["error_message"] or "") for r in rows)


def test_phash_dct_without_scipy_matches_scipy(monkeypatch):
    pytest.importorskip("scipy")
    from clipcrawl.filters.dedup import hashes

    rng = np.random.default_rng(3)
    greys = [rng.integers(0, 256, (32, 32)).astype(np.float64) for _ in range(50)]
    greys += [rng.normal(size=(32, 32)).cumsum(0).cumsum(1) for _ in range(50)]  # smooth, photo-like
    with_scipy = [hashes._dct_low(g) for g in greys]
    monkeypatch.setitem(sys.modules, "scipy.fft", None)  # import fails as on a core install
    for g, ref in zip(greys, with_scipy):
        ours = hashes._dct_low(g)
        assert np.abs(ours - ref).max() < 1e-6
        np.testing.assert_array_equal(ours > np.median(ours), ref > np.median(ref))


def test_real_model_without_torch_names_the_extra(tmp_path):
    r = _no_torch_run("""
        import sys
        from clipcrawl.filters.clip.model import load_clip
        from clipcrawl.schemas.config import ConfigError
        try:
            load_clip("ViT-B-32", "openai")
        except ConfigError as e:
            print("MSG", e)
            sys.exit(2)
        try:
            load_clip("tiny", None, device="cuda")
        except ConfigError as e:
            print("MSG", e)
        clip = load_clip("tiny", None)
        print("MODEL", type(clip.model).__name__, clip.name)
    """, tmp_path)
    assert r.returncode == 2 and 'pip install "clipcrawl[clip]"' in r.stdout, r.stdout + r.stderr
    assert "CLIP model 'ViT-B-32' needs PyTorch and open_clip" in r.stdout


def test_run_config_with_a_real_model_fails_before_work_without_torch(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"dataset: {tmp_path / 'ds'}\nsources:\n  urls:\n    path: {tmp_path / 'urls.txt'}\n"
                   "filters:\n  clip:\n    model: ViT-B-32\n")
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:9/a.jpg\tcaption\n")
    r = _no_torch_run(f"""
        import sys
        from clipcrawl.cli import main
        sys.exit(main(["run", {str(cfg)!r}, "--check"]))
    """, tmp_path)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'pip install "clipcrawl[clip]"' in (r.stdout + r.stderr)
    assert not (tmp_path / "ds" / "shards").exists()


def test_light_preprocess_through_the_prefetcher():
    from clipcrawl.filters.clip.light import load_light_tiny
    from clipcrawl.filters.clip.prefetch import Prefetcher

    light = load_light_tiny()
    buf = io.BytesIO()
    _images()[1].save(buf, "PNG")
    with Prefetcher(light.preprocess, light.tokenizer, workers=2) as pf:
        (batch,) = list(pf.batches([0, 1], [buf.getvalue(), b"junk"], ["a", "b"], 4))
    assert isinstance(batch.pixels, np.ndarray) and batch.pixels.shape == (1, 3, 64, 64)
    assert batch.ok == [True, False] and isinstance(batch.tokens, np.ndarray)
