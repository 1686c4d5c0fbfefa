"""Embeddings in clip-retrieval's layout: ``img_emb/img_emb_N.npy``, ``text_emb/text_emb_N.npy``,
``metadata/metadata_N.parquet``, read the way autofaiss and clip-retrieval read them (files sorted
by name, rows concatenated in that order)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from clipcrawl.pipelines.manifest import check_embeddings, kept_samples

from .fixtures import make_dataset


def write_part(folder, part: str, img: np.ndarray, txt: np.ndarray, meta: pd.DataFrame) -> None:
    """One part as clip-retrieval's NumpyWriter writes it (np.save to a buffer, pandas to_parquet)."""
    for sub, name, arr in (("img_emb", "img_emb", img), ("text_emb", "text_emb", txt)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, arr)
        (folder / sub / f"{name}_{part}.npy").write_bytes(buf.getvalue())
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    meta.to_parquet(folder / "metadata" / f"metadata_{part}.parquet")


def _embeddings_for(dataset: str, folder, per_part: int, width: int = 2) -> tuple[np.ndarray, list[str]]:
    kept = kept_samples(dataset, ["key", "url", "caption"]).to_pandas()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(kept), 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    for i, start in enumerate(range(0, len(kept), per_part)):
        sl = slice(start, start + per_part)
        meta = kept.iloc[sl].rename(columns={"key": "image_path"}).reset_index(drop=True)
        write_part(folder, f"{i:0{width}d}", emb[sl].astype(np.float16), emb[sl].astype(np.float16), meta)
    return emb, kept["key"].tolist()


@pytest.mark.unverified("hand-made embeddings metadata without keys")
def test_layout_is_what_autofaiss_and_clip_retrieval_read(tmp_path):
    faiss = pytest.importorskip("faiss")
    ds = str(tmp_path / "ds")
    make_dataset(ds, n_shards=3, n=30)  # 60 kept samples
    folder = tmp_path / "ds" / "embeddings"
    emb, keys = _embeddings_for(ds, folder, per_part=5)  # 12 parts: 00 .. 11
    layout = check_embeddings(str(folder))
    assert layout.rows == 60 and layout.image_dim == layout.text_dim == 32 and layout.parts[-1] == "11"
    # autofaiss (embedding_reader) concatenates the .npy files in sorted order; clip-retrieval's
    # metadata provider concatenates the metadata parts in the same order: row i <-> embedding i
    files = sorted((folder / "img_emb").glob("*.npy"))
    x = np.concatenate([np.load(f) for f in files]).astype(np.float32)
    meta = pd.concat([pd.read_parquet(f) for f in sorted((folder / "metadata").glob("*.parquet"))])
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nn = index.search(emb[[3, 41]], 1)
    assert meta["image_path"].iloc[nn[:, 0]].tolist() == [keys[3], keys[41]]


def test_layout_errors(tmp_path):
    ds = str(tmp_path / "ds")
    make_dataset(ds, n_shards=2, n=30)
    _embeddings_for(ds, tmp_path / "bad", per_part=3, width=1)  # parts 0..13, unpadded
    with pytest.raises(ValueError, match="zero-pad"):
        check_embeddings(str(tmp_path / "bad"))
    _embeddings_for(ds, tmp_path / "short", per_part=40)
    (tmp_path / "short" / "metadata" / "metadata_00.parquet").unlink()
    with pytest.raises(ValueError, match="parts differ"):
        check_embeddings(str(tmp_path / "short"))
    _embeddings_for(ds, tmp_path / "rows", per_part=40)
    np.save(tmp_path / "rows" / "img_emb" / "img_emb_00.npy", np.zeros((3, 32), np.float16))
    with pytest.raises(ValueError, match="metadata rows"):
        check_embeddings(str(tmp_path / "rows"))


@pytest.mark.slow
def test_clipcrawl_score_save_embeddings_layout(tmp_path):
    """Once ``clipcrawl score --save-embeddings`` exists, its files follow the same layout."""
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "score", "--help"], capture_output=True, text=True)
    if r.returncode != 0 or "--save-embeddings" not in r.stdout:
        pytest.skip("clipcrawl score --save-embeddings is not available in this checkout")
    ds = tmp_path / "ds"
    make_dataset(str(ds), n_shards=2, n=12)
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "score", str(ds), "--model", "tiny", "--save-embeddings"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "No such option" in r.stderr:
        pytest.skip(f"clipcrawl score has another interface: {r.stderr.strip()[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    layout = check_embeddings(str(ds / "embeddings"))
    assert layout.rows == 16 and layout.image_dim == layout.text_dim
    # row i of the concatenated metadata (sorted part names) is kept sample i
    meta = pd.concat([pd.read_parquet(f) for f in sorted((ds / "embeddings" / "metadata").glob("*.parquet"))])
    assert {"image_path", "caption", "url"} <= set(meta.columns)
    kept = kept_samples(str(ds), ["key", "url", "caption"]).to_pandas()
    assert meta["url"].tolist() == kept["url"].tolist() and meta["caption"].tolist() == kept["caption"].tolist()
    img = np.concatenate([np.load(f) for f in sorted((ds / "embeddings" / "img_emb").glob("*.npy"))])
    assert np.isfinite(img.astype(np.float32)).all()
    shutil.rmtree(ds / "embeddings")
