"""A user-supplied safety head (LAION-style linear/MLP on CLIP image embeddings) replaces a zero-shot tag."""

from __future__ import annotations

import numpy as np
import pytest

from clipcrawl.filters.clip.safety_head import load_head
from clipcrawl.filters.clip.score import ScoreClip
from clipcrawl.schemas.config import ClipConfig, ConfigError
from tests.filters.clip.conftest import make_table


def test_head_formats_and_checks(tmp_path):
    torch = pytest.importorskip("torch")
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    torch.save(mlp.state_dict(), tmp_path / "mlp.pt")
    head = load_head(tmp_path / "mlp.pt", "punsafe", 64)
    x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    with torch.no_grad():
        want = torch.sigmoid(mlp(torch.from_numpy(xn)))[:, 0].numpy()
    np.testing.assert_allclose(head.probabilities(x), want, atol=1e-6)
    w, b = np.ones((2, 64), np.float32), np.array([0.0, 1.0], np.float32)
    np.savez(tmp_path / "lin.npz", **{"fc.weight": w, "fc.bias": b})
    p = load_head(tmp_path / "lin.npz", "pwatermark").probabilities(x)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-1.0)), atol=1e-6)  # softmax over 2: second class
    with pytest.raises(ConfigError, match="512-d"):
        load_head(tmp_path / "mlp.pt", "punsafe", 512)
    with pytest.raises(ConfigError, match="not found"):
        load_head(tmp_path / "nope.pt", "punsafe")


def test_score_clip_uses_the_head(tmp_path, shape_pairs):
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(64, 1)
    torch.save(lin.state_dict(), tmp_path / "unsafe.pt")
    images = [p[0] for p in shape_pairs[:6]]
    table = make_table(images, [p[1] for p in shape_pairs[:6]])
    cfg = ClipConfig(model="tiny", precision="fp32", device="cpu", unsafe_head=str(tmp_path / "unsafe.pt"))
    out = ScoreClip(cfg)(table)
    emb = np.asarray(out.column("image_embedding").to_pylist(), dtype=np.float32)
    with torch.no_grad():
        want = torch.sigmoid(lin(torch.from_numpy(emb)))[:, 0].numpy()
    np.testing.assert_allclose(out.column("punsafe").to_numpy(), want, atol=1e-5)
    assert out.column("status").to_pylist() == ["success"] * 6  # scores never filter
