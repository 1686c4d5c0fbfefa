"""Any open_clip architecture as the scorer: SigLIP / SigLIP2 (sigmoid pairs), DFN-style ``hf-hub:``
towers, MetaCLIP 2 worldwide, local tokenizers. Every check is against open_clip itself on randomly
initialised weights of the architecture (``open_clip.create_model(arch, pretrained=None)``): fp32
within 1e-4, the fast path (ONNX, int8 image tower) within 0.01 of the similarities.

The real SigLIP / MetaCLIP 2 tokenizers (SentencePiece / HF) download with the weights, so both sides
get the same token ids: from a small HF tokenizer built here (``--tokenizer DIR``), or random ids fed
to both encoders.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from clipcrawl.filters.clip.encoders import make_encoder  # noqa: E402
from clipcrawl.filters.clip.model import ClipWeightsUnavailable, load_clip, make_tokenizer  # noqa: E402
from clipcrawl.schemas.config import ConfigError  # noqa: E402

WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "circle", "square", "on", "white", "black", "background", "the", "an", "image"]


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


needs_hf = pytest.mark.skipif(not (_has("transformers") and _has("tokenizers")),
                              reason="transformers/tokenizers not installed (pip install 'clipcrawl[clip-hf]')")


def build_hf_tokenizer(path: Path) -> Path:
    """A small HF tokenizer (WordLevel over WORDS, </s> appended), saved as save_pretrained() does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    if not (_has("transformers") and _has("tokenizers")):
        pytest.skip("transformers/tokenizers not installed")
    return build_hf_tokenizer(tmp_path_factory.mktemp("tok"))


def _reference(arch: str, ours, **kw):
    """open_clip's own model of ``arch`` (random init) holding our model's weights."""
    ref = open_clip.create_model(arch, pretrained=None, **kw).eval()
    missing, unexpected = ref.load_state_dict(ours.model.state_dict(), strict=True)
    assert not missing and not unexpected
    return ref


def _inputs(ref, clip, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = getattr(ref.visual, "image_size", 224)
    h, w = (size, size) if isinstance(size, int) else size
    pixels = torch.randn(n, 3, h, w, generator=g)
    tokens = clip.tokenizer(["a photo of a red circle on a white background", "a black dog"][:n])
    return pixels, tokens


def _ref_features(ref, pixels, tokens):
    with torch.no_grad():
        i = torch.nn.functional.normalize(ref.encode_image(pixels), dim=-1).numpy()
        t = torch.nn.functional.normalize(ref.encode_text(tokens), dim=-1).numpy()
    return i, t


def _check_exact(clip, ref, pixels, tokens):
    ri, rt = _ref_features(ref, pixels, tokens)
    enc = make_encoder(clip)
    ei, et = enc.encode_images(pixels), enc.encode_texts(tokens)
    assert np.abs(ei - ri).max() < 1e-4 and np.abs(et - rt).max() < 1e-4
    return (ri * rt).sum(1)


def _check_fast(arch, pixels, tokens, sims, **kw):
    fast = load_clip(arch, device="cpu", precision="fast", **kw)
    enc = make_encoder(fast)
    got = (enc.encode_images(pixels) * enc.encode_texts(tokens)).sum(1)
    assert np.abs(got - sims).max() < 0.01, (got, sims)


# ---------------------------------------------------------------- SigLIP
@needs_hf
def test_siglip_exact_and_sigmoid_score(hf_tok):
    """ViT-B-16-SigLIP (timm image tower, bidirectional text tower read at the last token, logit_bias)."""
    clip = load_clip("ViT-B-16-SigLIP", None, device="cpu", precision="fp32", tokenizer=str(hf_tok))
    ref = _reference("ViT-B-16-SigLIP", clip)
    from open_clip.tokenizer import HFTokenizer

    pixels, tokens = _inputs(ref, clip)
    want = HFTokenizer(str(hf_tok), context_length=64, clean="canonicalize")(
        ["a photo of a red circle on a white background", "a black dog"])
    assert torch.equal(tokens, want) and tokens.shape == (2, 64)  # same ids on both sides
    sims = _check_exact(clip, ref, pixels, tokens)
    # the model's own calibrated probability: sigmoid(logit_scale.exp() * cosine + logit_bias)
    assert clip.logit_bias == pytest.approx(float(ref.logit_bias.detach())) and clip.logit_bias == pytest.approx(-10.0)
    direct = torch.sigmoid(ref.logit_scale.exp() * torch.from_numpy(sims) + ref.logit_bias).detach().numpy()
    assert np.abs(clip.sigmoid(sims) - direct).max() < 1e-6


@needs_hf
@pytest.mark.slow
def test_siglip_fast_path(hf_tok):
    clip = load_clip("ViT-B-16-SigLIP", None, device="cpu", precision="fp32", tokenizer=str(hf_tok))
    ref = _reference("ViT-B-16-SigLIP", clip)
    pixels, tokens = _inputs(ref, clip)
    sims = _check_exact(clip, ref, pixels, tokens)
    import tempfile  # the fast model loads the same random weights through a checkpoint file

    with tempfile.TemporaryDirectory() as d:
        ckpt = Path(d) / "siglip.pt"
        torch.save(clip.model.state_dict(), ckpt)
        _check_fast("ViT-B-16-SigLIP", pixels, tokens, sims, pretrained=str(ckpt), tokenizer=str(hf_tok))


@needs_hf
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ViT-B-32-SigLIP2-256"])
def test_siglip2_exact(arch, hf_tok):
    """SigLIP2 (Gemma tokenizer, 256k vocabulary; the local tokenizer's ids are valid Gemma-range ids)."""
    clip = load_clip(arch, None, device="cpu", precision="fp32", tokenizer=str(hf_tok))
    ref = _reference(arch, clip)
    pixels, tokens = _inputs(ref, clip)
    sims = _check_exact(clip, ref, pixels, tokens)
    assert clip.logit_bias is not None
    direct = torch.sigmoid(ref.logit_scale.exp() * torch.from_numpy(sims) + ref.logit_bias).detach().numpy()
    assert np.abs(clip.sigmoid(sims) - direct).max() < 1e-6


# ---------------------------------------------------------------- DFN-style hf-hub tower
def hf_snapshot(cache: Path, repo: str, model_cfg: dict, state_dict: dict, preprocess_cfg: dict | None = None) -> Path:
    """An hf-hub repo as the Hugging Face cache holds it after a download (refs/main -> snapshots/<sha>/):
    open_clip_config.json + open_clip_model.safetensors. ``load_clip('hf-hub:' + repo, cache_dir=cache)``
    takes the same path as for a real download, without the network."""
    from safetensors.torch import save_file

    sha = "0123456789abcdef0123456789abcdef01234567"
    base = cache / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / sha
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(sha)
    (snap / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                            "preprocess_cfg": preprocess_cfg or {}}))
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(snap / "open_clip_model.safetensors"))
    return snap


@pytest.fixture(scope="module")
def dfn_style(tmp_path_factory):
    """A DFN-style tower: open_clip's ViT-S-32 with QuickGELU (DFN's activation), random weights, in an
    hf-hub snapshot with DFN's preprocess config."""
    cache = tmp_path_factory.mktemp("hf")
    cfg = {**open_clip.get_model_config("ViT-S-32"), "quick_gelu": True}
    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-S-32", pretrained=None, force_quick_gelu=True).eval()
    pre = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
           "interpolation": "bicubic", "resize_mode": "squash"}
    hf_snapshot(cache, "clipcrawl-test/DFN-style-ViT-S-32", cfg, ref.state_dict(), pre)
    return cache, ref


def test_hf_hub_dfn_style_exact(dfn_style, monkeypatch):
    cache, ref = dfn_style
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # from the cache: no network needed
    clip = load_clip("hf-hub:clipcrawl-test/DFN-style-ViT-S-32", device="cpu", precision="fp32", cache_dir=str(cache))
    assert clip.name == "hf-hub:clipcrawl-test/DFN-style-ViT-S-32" and clip.logit_bias is None
    # QuickGELU came from the config (a GELU model would differ far beyond 1e-4)
    assert type(clip.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    pixels, tokens = _inputs(ref, clip)
    assert torch.equal(tokens, open_clip.get_tokenizer("ViT-S-32")(["a photo of a red circle on a white background",
                                                                     "a black dog"]))
    _check_exact(clip, ref, pixels, tokens)
    assert "squash" in repr(clip.preprocess) or "Resize(size=(224, 224)" in repr(clip.preprocess)


@pytest.mark.slow
def test_hf_hub_dfn_style_fast_path(dfn_style, monkeypatch):
    cache, ref = dfn_style
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = load_clip("hf-hub:clipcrawl-test/DFN-style-ViT-S-32", device="cpu", precision="fp32", cache_dir=str(cache))
    pixels, tokens = _inputs(ref, clip)
    sims = _check_exact(clip, ref, pixels, tokens)
    _check_fast("hf-hub:clipcrawl-test/DFN-style-ViT-S-32", pixels, tokens, sims, cache_dir=str(cache))


def test_hf_hub_not_cached_offline_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ClipWeightsUnavailable, match="hf-hub:apple/DFN5B-CLIP-ViT-H-14"):
        load_clip("hf-hub:apple/DFN5B-CLIP-ViT-H-14", device="cpu", cache_dir=str(tmp_path))


# ---------------------------------------------------------------- MetaCLIP 2 worldwide
def _worldwide_small() -> dict:
    """ViT-H-14-worldwide's config kinds (XLM-V tokenizer by name, eos pooling at eos_id, causal text)
    at a CPU-cheap size."""
    cfg = json.loads(json.dumps(open_clip.get_model_config("ViT-H-14-worldwide")))
    cfg["embed_dim"] = 64
    cfg["vision_cfg"].update(layers=2, width=64, head_width=32, patch_size=32)
    cfg["text_cfg"].update(vocab_size=len(WORDS) + 3, width=64, heads=2, layers=2, eos_id=1)
    return cfg


@needs_hf
def test_metaclip2_worldwide_kind_exact(hf_tok, tmp_path):
    """MetaCLIP 2 worldwide's text tower kind (HF multilingual tokenizer, eos pooling) through a local
    folder in hf-hub layout, with a local tokenizer standing in for XLM-V (same ids on both sides)."""
    assert "ViT-H-14-worldwide" in open_clip.list_models()
    assert "metaclip2_worldwide" in open_clip.list_pretrained_tags_by_model("ViT-H-14-worldwide")
    cfg = _worldwide_small()
    torch.manual_seed(0)
    from open_clip.model import CLIP

    ref = CLIP(**cfg).eval()
    folder = tmp_path / "metaclip2-small"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    from safetensors.torch import save_file

    save_file(ref.state_dict(), str(folder / "open_clip_model.safetensors"))
    clip = load_clip("ViT-H-14-worldwide", str(folder), device="cpu", precision="fp32", tokenizer=str(hf_tok))
    pixels, tokens = _inputs(ref, clip)
    assert (tokens == 1).any(dim=1).all()  # </s> (eos_id 1) ends each caption: eos pooling reads there
    sims = _check_exact(clip, ref, pixels, tokens)
    enc = make_encoder(load_clip("ViT-H-14-worldwide", str(folder), device="cpu", precision="fast",
                                 tokenizer=str(hf_tok)))
    got = (enc.encode_images(pixels) * enc.encode_texts(tokens)).sum(1)
    assert np.abs(got - sims).max() < 0.01


@needs_hf
@pytest.mark.slow
@pytest.mark.parametrize("arch", [
    "ViT-L-14-worldwide",
    pytest.param("ViT-H-14-worldwide", marks=pytest.mark.skipif(
        os.environ.get("CLIPCRAWL_TEST_HUGE_MODELS") != "1",
        reason="~1.9 B parameters, ~16 GB for the two copies: set CLIPCRAWL_TEST_HUGE_MODELS=1 on a big machine")),
])
def test_metaclip2_worldwide_real_arch(arch, hf_tok):
    """The worldwide towers themselves: ViT-L-14-worldwide (mT5 tokenizer, ~0.6 B parameters, ~5 GB for the two
    copies) and ViT-H-14-worldwide, the metaclip2_worldwide release (~1.9 B parameters with the XLM-V
    embedding: ~16 GB, too much beside the rest of the suite on CI's 24 GB; its config kinds are tested above
    on a small model of the same layout)."""
    clip = load_clip(arch, None, device="cpu", precision="fp32", tokenizer=str(hf_tok))
    ref = _reference(arch, clip)
    pixels, tokens = _inputs(ref, clip)
    _check_exact(clip, ref, pixels, tokens)


# ---------------------------------------------------------------- tokenizers
def test_tokenizer_dir_with_clip_bpe(tmp_path):
    """A folder holding a CLIP BPE vocabulary replaces the architecture's tokenizer (same ids here)."""
    import shutil

    from clipcrawl.filters.clip.tokenizer import BPE_PATH

    shutil.copy(BPE_PATH, tmp_path / "bpe_simple_vocab_16e6.txt.gz")
    tok = make_tokenizer("ViT-S-32", str(tmp_path))
    texts = ["a photo of a cat", "Ünïcödé and 123 numbers"]
    assert torch.equal(tok(texts), open_clip.get_tokenizer("ViT-S-32")(texts))


def test_bad_tokenizer_arguments(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no tokenizer files"):
        make_tokenizer("ViT-S-32", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="not a folder"):
        make_tokenizer("ViT-S-32", str(tmp_path / "missing"))


@needs_hf
def test_missing_tokenizer_offline_is_clear(tmp_path, monkeypatch):
    """Weights present, tokenizer neither cached nor given, offline: one line naming the tokenizer and
    --tokenizer DIR (ConfigError: exit 2); the CLI says it on stderr with exit code 2."""
    folder = tmp_path / "siglip-like"
    folder.mkdir()
    cfg = json.loads((Path(__file__).resolve().parents[3] / "clipcrawl/assets/tiny_clip/clipcrawl-tiny.json").read_text())
    cfg["text_cfg"]["hf_tokenizer_name"] = "timm/clipcrawl-test-not-cached"
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ClipWeightsUnavailable) as e:
        load_clip("ViT-B-32", str(folder), device="cpu", cache_dir=str(tmp_path / "hf"))
    msg = str(e.value)
    assert "\n" not in msg and "timm/clipcrawl-test-not-cached" in msg and "--tokenizer DIR" in msg
    assert isinstance(e.value, ConfigError)

    from PIL import Image

    from clipcrawl.base.shardfiles import ShardRef
    from clipcrawl.pipelines.writer import write_shard
    from tests.filters.clip.conftest import make_table

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, "JPEG")
    write_shard(ShardRef.of(str(tmp_path / "ds"), 0), make_table([buf.getvalue()], ["a red square"]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.run([sys.executable, "-m", "clipcrawl", "score", str(tmp_path / "ds"), "--model", "ViT-B-32",
                           "--pretrained", str(folder), "--precision", "fp32"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("clipcrawl: error:")]
    assert len(err) == 1 and "--tokenizer DIR" in err[0], proc.stderr
