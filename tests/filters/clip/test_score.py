"""ScoreClip / ApplyClipThreshold with the shipped tiny model."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from clipcrawl.filters.clip.score import ApplyClipThreshold, ScoreClip
from clipcrawl.schemas.config import ClipConfig
from tests.filters.clip.conftest import make_table


def _sims(table: pa.Table) -> np.ndarray:
    return table.column("clip_similarity").to_numpy(zero_copy_only=False).astype(np.float64)


@pytest.fixture(scope="module")
def scored(shape_pairs):
    """The same pairs scored by the exact and the fast path, plus shuffled and wrong-colour captions."""
    images = [p[0] for p in shape_pairs]
    caps = [p[1] for p in shape_pairs]
    n = len(images)
    shuffled = [caps[(i + 7) % n] for i in range(n)]
    wrong = [p[2] for p in shape_pairs]
    table = make_table(images * 3, caps + shuffled + wrong)
    exact = ScoreClip(ClipConfig(model="tiny", precision="fp32", device="cpu", batch_size=16))(table)
    fast = ScoreClip(ClipConfig(model="tiny", precision="fast", device="cpu", batch_size=16))(table)
    return n, table, exact, fast


def test_exact_path_equals_direct_open_clip(scored, shape_pairs):
    import open_clip
    import torch

    from clipcrawl.filters.clip.model import register_tiny, tiny_checkpoint

    n, table, exact, _ = scored
    register_tiny()
    model, _, preprocess = open_clip.create_model_and_transforms("clipcrawl-tiny", pretrained=str(tiny_checkpoint()))
    tokenizer = open_clip.get_tokenizer("clipcrawl-tiny")
    model.eval()
    images = table.column("image").to_pylist()
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
        img = model.encode_image(x, normalize=True)
        txt = model.encode_text(tokenizer(table.column("caption").to_pylist()), normalize=True)
    direct = (img * txt).sum(-1).numpy()
    np.testing.assert_allclose(_sims(exact), direct, atol=1e-4)
    assert exact.column("clip_model").to_pylist() == ["clipcrawl-tiny"] * len(images)
    assert exact.schema.field("clip_similarity").type == pa.float32()


def test_matched_pairs_outscore_shuffled_and_wrong_colour(scored):
    n, _, exact, _ = scored
    s = _sims(exact)
    matched, shuffled, wrong = s[:n], s[n : 2 * n], s[2 * n :]
    auc = (matched[:, None] > shuffled[None, :]).mean()
    assert auc >= 0.9, auc
    assert (matched > wrong).mean() >= 0.8


def test_fast_path_within_001_of_fp32(scored):
    _, _, exact, fast = scored
    diff = np.abs(_sims(exact) - _sims(fast))
    assert diff.max() <= 0.01, diff.max()


def test_embeddings_and_zero_shot_columns(scored):
    _, _, exact, fast = scored
    for t in (exact, fast):
        assert t.schema.field("image_embedding").type == pa.list_(pa.float32(), 64)
        img = np.asarray(t.column("image_embedding").to_pylist(), dtype=np.float32)
        txt = np.asarray(t.column("text_embedding").to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
        np.testing.assert_allclose((img * txt).sum(1), _sims(t), atol=1e-5)
        for col in ("punsafe", "pwatermark"):
            p = t.column(col).to_numpy(zero_copy_only=False)
            assert t.schema.field(col).type == pa.float32()
            assert np.all((p >= 0) & (p <= 1))


def test_corrupt_and_unscorable_rows(shape_pairs):
    good = shape_pairs[0][0]
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    png = buf.getvalue()
    # a PNG header claiming 100000 x 100000 pixels: refused before decoding
    ihdr = (100000).to_bytes(4, "big") * 2 + png[24:29]
    bomb = png[:16] + ihdr + zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big") + png[33:]
    images = [good, b"not an image", good[: len(good) // 2], b"", bomb, good, None]
    statuses = ["success"] * 5 + ["filtered_text", "success"]
    table = make_table(images, ["a red circle"] * 7, statuses)
    out = ScoreClip(ClipConfig(model="tiny", precision="fp32", device="cpu", batch_size=4))(table)
    st = out.column("status").to_pylist()
    msgs = out.column("error_message").to_pylist()
    sims = out.column("clip_similarity").to_pylist()
    assert st[0] == "success" and sims[0] is not None
    assert st[1:5] == ["failed_to_score"] * 4
    assert all(m.startswith("clip: ") for m in msgs[1:5])
    assert "pixels" in msgs[4]
    assert all(s is None for s in sims[1:5])
    assert st[5] == "filtered_text" and sims[5] is None and msgs[5] is None  # not ours to score
    assert st[6] == "success" and sims[6] is None  # no image bytes: stays unscored
    assert out.column("image_embedding").null_count == 6


def test_apply_threshold_score_then_decide():
    table = make_table([b"x"] * 4, ["a"] * 4, ["success", "success", "success", "failed_to_download"])
    table = table.append_column("clip_similarity", pa.array([0.1, 0.3, None, 0.0], pa.float32()))
    out = ApplyClipThreshold(0.28)(table)
    assert out.column("status").to_pylist() == ["filtered_clip", "success", "success", "failed_to_download"]
    assert out.column("error_message").to_pylist()[0].startswith("clip_threshold: clip_similarity 0.100 < 0.28")
