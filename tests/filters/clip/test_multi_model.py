"""Several scorers in one pass: ``filters.clip.models`` / repeated ``--model``, one decode, a score column
per model, rules and ``--top-fraction`` over any of them, the DataComp-style intersection preset, re-cuts
without rescoring, and ``verify`` after a two-scorer ``score`` and ``run``."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.base.shardfiles import ShardRef, list_shards
from clipcrawl.cli import main
from clipcrawl.filters.clip.multi import scorers, slug
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.config import ClipConfig, ConfigError, FiltersConfig
from tests.filters.clip.conftest import make_table
from tests.verify_helpers import assert_verified

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")


def test_config_models_list_and_names():
    cfg = ClipConfig(models=[{"model": "tiny", "pretrained": None}, {"model": "ViT-L-14"},
                             {"model": "tiny", "name": "again"}, {"model": "ViT-L-14"}])
    assert (cfg.model, cfg.pretrained) == ("tiny", None)  # the first entry is the primary model
    sc = scorers(cfg)
    assert [s.suffix for s in sc] == ["", "vit_l_14", "again", "vit_l_14_2"]
    assert [s.similarity_column for s in sc] == ["clip_similarity", "clip_similarity_vit_l_14",
                                                 "clip_similarity_again", "clip_similarity_vit_l_14_2"]
    assert sc[1].pretrained == "openai" and sc[3].model_column == "clip_model_vit_l_14_2"
    assert slug("hf-hub:apple/DFN5B-CLIP-ViT-H-14") == "hf_hub_apple_dfn5b_clip_vit_h_14"
    assert scorers(ClipConfig(model="tiny"))[0].model == "tiny"
    with pytest.raises(ValueError):
        ClipConfig(top_fraction_by="caption")  # only score columns rank
    with pytest.raises(ValueError):
        ClipConfig(models=[{"model": "tiny", "name": "Bad Name"}])


@pytest.fixture()
def two_shards(tmp_path, shape_pairs):
    root = tmp_path / "ds"
    for shard, chunk in enumerate((shape_pairs[:6], shape_pairs[6:12])):
        t = make_table([p[0] for p in chunk], [p[1] for p in chunk])
        t = t.set_column(0, "key", pa.array([f"{shard:02d}{i:018x}" for i in range(t.num_rows)]))
        write_shard(ShardRef.of(str(root / "shards"), shard), t)
    return root


def _rows(root):
    return [r for ref in list_shards(str(root / "shards")) for r in pq.read_table(ref.parquet).to_pylist()]


@pytest.fixture(scope="module")
def small_arch_ckpt(tmp_path_factory):
    """A random-init open_clip ViT-S-32 saved as a local checkpoint, and the model itself."""
    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    path = tmp_path_factory.mktemp("ckpt") / "vit_s_32_random.pt"
    torch.save(ref.state_dict(), path)
    return path, ref


def test_score_two_models_one_decode(tmp_path, small_arch_ckpt, monkeypatch, shape_pairs):
    """tiny + a random-init ViT-S-32 in one ``score``: each image opened once, a column per model equal
    to a direct open_clip computation, the model names recorded per row."""
    from PIL import Image

    path, ref = small_arch_ckpt
    two_shards = tmp_path / "ds"
    t = make_table([p[0] for p in shape_pairs[:6]], [p[1] for p in shape_pairs[:6]])
    write_shard(ShardRef.of(str(two_shards / "shards"), 0), t)
    opened = []
    real_open = Image.open

    def counting_open(fp, *a, **k):
        opened.append(1)
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", counting_open)
    rc = main(["score", str(two_shards), "--model", "tiny", "--model", "s32=ViT-S-32", "--pretrained", "-",
               "--pretrained", str(path), "--precision", "fp32", "--batch-size", "4"])
    monkeypatch.setattr(Image, "open", real_open)
    assert rc == 0
    assert len(opened) == 6  # one decode per image for both models
    rows = _rows(two_shards)
    assert len(rows) == 6 and all(r["clip_model"] == "clipcrawl-tiny" for r in rows)
    assert all(r["clip_model_s32"] == f"ViT-S-32/{path}" for r in rows)
    assert all(r["clip_sigmoid"] is None and r.get("clip_sigmoid_s32") is None for r in rows)  # softmax CLIPs
    pre = open_clip.create_model_and_transforms("ViT-S-32", pretrained=None)[2]
    tok = open_clip.get_tokenizer("ViT-S-32")
    by_caption = {p[1]: p[0] for p in shape_pairs}
    for r in rows[:3]:
        x = pre(Image.open(io.BytesIO(by_caption[r["caption"]])).convert("RGB"))[None]
        with torch.no_grad():
            want = float((ref.encode_image(x, normalize=True) * ref.encode_text(tok([r["caption"]]), normalize=True)).sum())
        assert abs(r["clip_similarity_s32"] - want) < 1e-4
    assert_verified(two_shards)


def test_recut_by_another_model_never_rescores(two_shards):
    """tiny twice under two names: identical columns; --top-fraction --by the second column re-cuts from
    the stored scores (no re-embedding: the shards are only re-thresholded), verify passes."""
    args = ["score", str(two_shards), "--model", "tiny", "--model", "b=tiny", "--precision", "fp32"]
    assert main(args) == 0
    rows = _rows(two_shards)
    assert all(r["clip_similarity"] == r["clip_similarity_b"] for r in rows)
    scores = {r["key"]: r["clip_similarity_b"] for r in rows}

    from clipcrawl.pipelines.passes.score import score_shards

    cfg = ClipConfig(models=[{"model": "tiny", "pretrained": None}, {"model": "tiny", "name": "b"}],
                     precision="fp32", threshold=-1)
    s = score_shards(str(two_shards), cfg)
    assert s.shards_rethresholded == 2 and s.scored == 0  # both models' scores found: nothing embedded
    assert main(args + ["--top-fraction", "0.25", "--by", "clip_similarity_b"]) == 0
    rows = _rows(two_shards)
    assert {r["key"]: r["clip_similarity_b"] for r in rows} == scores
    top = sorted(scores, key=scores.get)[-3:]  # ceil(0.25 * 12) over both shards
    assert {r["key"] for r in rows if r["status"] == "success"} == set(top)
    assert all("clip_similarity_b" in r["error_message"] for r in rows if r["status"] == "filtered_clip")
    assert_verified(two_shards)


def test_cli_spec_errors(two_shards):
    assert main(["score", str(two_shards), "--model", "tiny", "--pretrained", "a", "--pretrained", "b",
                 "--pretrained", "c"]) == 2
    assert main(["score", str(two_shards), "--model", "tiny", "--by", "caption"]) == 2
    before = {p.name: p.stat().st_mtime_ns for p in (two_shards / "shards").iterdir()}
    # a score column no model writes and no shard holds: exit 2 before anything is scored or written
    assert main(["score", str(two_shards), "--model", "tiny", "--top-fraction", "0.5", "--by",
                 "clip_similarity_nobody"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in (two_shards / "shards").iterdir()} == before


# ---------------------------------------------------------------- the DataComp-style intersection preset
def _pool():
    """key, B/32 score, L/14 score."""
    rows = [("a", 0.30, 0.40), ("b", 0.24, 0.39), ("c", 0.26, 0.10), ("d", 0.28, 0.35), ("e", 0.33, 0.20),
            ("f", 0.25, 0.38), ("g", 0.10, 0.05), ("h", 0.27, 0.15), ("i", 0.31, 0.12), ("j", 0.29, 0.11)]
    k, b, l14 = zip(*rows)
    n = len(rows)
    t = pa.table({"key": list(k), "caption": ["a photo of something nice"] * n, "status": ["success"] * n,
                  "error_message": pa.nulls(n, pa.string()), "clip_similarity": pa.array(b, pa.float32()),
                  "clip_similarity_l14": pa.array(l14, pa.float32())})
    return [t.slice(0, 4), t.slice(4)]


def test_intersection_preset_keep_set():
    from clipcrawl.filters.curate import curate
    from clipcrawl.filters.presets import apply_preset, describe_preset

    cfg = apply_preset(FiltersConfig(), "datacomp-intersect-b32-l14")
    assert [(s.model, s.suffix) for s in scorers(cfg.clip)] == [("ViT-B-32", ""), ("ViT-L-14", "l14")]
    out, _ = curate(_pool(), cfg)
    kept = "".join(k for t in out for k, s in zip(t.column("key").to_pylist(), t.column("status").to_pylist())
                   if s == "success")
    # L/14 top ceil(0.3 * 10) = 3 over the whole pool: a, b, f; B/32 >= 0.25: b (0.24) out
    assert kept == "af"
    assert any("DataComp" in line for line in describe_preset("datacomp-intersect-b32-l14"))
    # an explicit model replaces the recipe's first scorer; the L/14 one stays
    mine = apply_preset(FiltersConfig(clip=ClipConfig(model="tiny", pretrained=None)), "datacomp-intersect-b32-l14")
    assert [(s.model, s.suffix) for s in scorers(mine.clip)] == [("tiny", ""), ("ViT-L-14", "l14")]


def test_unknown_rank_column_is_a_config_error():
    from clipcrawl.schemas.config import parse_config

    with pytest.raises(ConfigError):
        parse_config({"clip": {"top_fraction_by": "width"}}, FiltersConfig, "test")


def test_rows_without_the_ranked_score():
    """A column no shard has is a ConfigError (the model was not scored); rows lacking the score where
    others have it do not pass a rule on it."""
    from clipcrawl.filters.clip.cut import CutRule, apply_cut

    t = _pool()[0].drop_columns(["clip_similarity_l14"])
    with pytest.raises(ConfigError, match="clip_similarity_l14"):
        apply_cut([t], CutRule(top_fraction=0.5, top_fraction_by="clip_similarity_l14"))
    t = _pool()[0]
    t = t.set_column(5, "clip_similarity_l14", pa.array([0.4, None, 0.3, 0.2], pa.float32()))
    out = apply_cut([t], CutRule(threshold=0.1, threshold_by="clip_similarity_l14"))[0]
    assert out.column("status").to_pylist() == ["success", "filtered_clip", "success", "success"]
    np.testing.assert_array_equal(out.column("clip_similarity").to_numpy(), t.column("clip_similarity").to_numpy())


# ---------------------------------------------------------------- run end to end
@pytest.mark.slow
@pytest.mark.network  # a loopback demo site only
def test_run_with_two_scorers_verifies_and_reports(tmp_path):
    """``run`` crawling the demo site on a loopback port with two scorers (the tiny model twice, as
    ``a`` and ``b``), the top half by the second one's column kept; verify passes; stats, the HTML report
    and the card show the second score and name its model."""
    import json

    from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent
    from tests.pipelines.test_run import clipcrawl, write_config

    clip = {"models": [{"model": "tiny", "pretrained": None}, {"model": "tiny", "pretrained": None, "name": "b"}],
            "threshold": -1, "precision": "fp32", "batch_size": 16, "top_fraction": 0.5,
            "top_fraction_by": "clip_similarity_b"}
    with DemoSite(DemoSiteContent(seed=11, n_images=16)) as site:
        cfg = write_config(tmp_path / "run.yaml", tmp_path / "ds", site.url, filters={"clip": clip})
        r = clipcrawl("run", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    ds = tmp_path / "ds"
    rows = _rows(ds)
    scored = [x for x in rows if x["clip_similarity_b"] is not None]
    assert scored and all(x["clip_model_b"] == "clipcrawl-tiny" and x["clip_model"] == "clipcrawl-tiny"
                          for x in scored)
    assert all(abs(x["clip_similarity"] - x["clip_similarity_b"]) < 1e-6 for x in scored)
    cand = [x for x in scored if x["status"] in ("success", "filtered_clip")]
    cutoff = sorted((x["clip_similarity_b"] for x in cand), reverse=True)[(len(cand) + 1) // 2 - 1]
    assert {x["key"] for x in rows if x["status"] == "success"} == {
        x["key"] for x in cand if x["clip_similarity_b"] >= cutoff}  # top ceil(50%), ties at the cut-off stay
    assert_verified(ds)
    assert "top 50% by clip_similarity_b" in (ds / "curation.json").read_text()

    out = clipcrawl("stats", str(ds), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    agg = json.loads(out.stdout)
    assert agg["clip_scores"]["clip_similarity_b"]["summary"]["n"] == len(scored)
    html = tmp_path / "report.html"
    assert clipcrawl("stats", str(ds), "--html", str(html)).returncode == 0
    assert "clip_similarity_b" in html.read_text()
    assert clipcrawl("card", str(ds)).returncode == 0
    assert "Further CLIP score `clip_similarity_b`: `clipcrawl-tiny`" in (ds / "README.md").read_text()


# ---------------------------------------------------------------- a sigmoid (SigLIP-kind) scorer in a pass
@pytest.fixture(scope="module")
def siglip_kind_folder(tmp_path_factory):
    """A SigLIP-kind model at the tiny model's size, in hf-hub layout with random weights: CustomTextCLIP
    with ``init_logit_bias`` (sigmoid pairs), a bidirectional text tower read at the last token."""
    import json

    from clipcrawl.filters.clip.model import TINY_DIR

    cfg = json.loads((TINY_DIR / "clipcrawl-tiny.json").read_text())
    cfg.update(custom_text=True, init_logit_bias=-10)
    cfg["text_cfg"].update(no_causal_mask=True, pool_type="last", proj_bias=True, context_length=32)
    torch.manual_seed(3)
    from open_clip.model import CustomTextCLIP

    ref = CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"}).eval()
    with torch.no_grad():
        ref.logit_bias.fill_(-3.0)  # a bias that is not the init value: read from the weights
    folder = tmp_path_factory.mktemp("siglip-kind")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    from safetensors.torch import save_file

    save_file(ref.state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder, ref


def test_sigmoid_scorer_writes_clip_sigmoid(tmp_path, shape_pairs, siglip_kind_folder):
    """As the primary model and as a further one: clip_sigmoid(_<name>) = sigmoid(logit_scale.exp() * cosine +
    logit_bias) of open_clip's own model; verify passes."""
    folder, ref = siglip_kind_folder
    root = tmp_path / "ds"
    t = make_table([p[0] for p in shape_pairs[:5]], [p[1] for p in shape_pairs[:5]])
    write_shard(ShardRef.of(str(root / "shards"), 0), t)
    assert main(["score", str(root), "--model", "ViT-B-32", "--pretrained", str(folder), "--model", "sig=tiny",
                 "--precision", "fp32"]) == 0
    rows = _rows(root)
    scale, bias = float(ref.logit_scale.detach().exp()), float(ref.logit_bias.detach())
    for r in rows:
        want = 1 / (1 + np.exp(-(scale * r["clip_similarity"] + bias)))
        assert abs(r["clip_sigmoid"] - want) < 1e-6 and r.get("clip_sigmoid_sig") is None
    # direct open_clip on one row: same cosine
    from PIL import Image

    pre = open_clip.image_transform(64, is_train=False)
    x = pre(Image.open(io.BytesIO(shape_pairs[0][0])).convert("RGB"))[None]
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=32)([shape_pairs[0][1]])
    with torch.no_grad():
        cos = float((ref.encode_image(x, normalize=True) * ref.encode_text(tok, normalize=True)).sum())
    assert abs(rows[0]["clip_similarity"] - cos) < 1e-4
    assert_verified(root)
    # the same model as the second scorer: clip_sigmoid_<name>
    assert main(["score", str(root), "--model", "tiny", "--model", "sig=ViT-B-32", "--pretrained", "-",
                 "--pretrained", str(folder), "--precision", "fp32", "--rescore"]) == 0
    rows2 = _rows(root)
    for a, b in zip(rows, rows2):
        assert abs(b["clip_similarity_sig"] - a["clip_similarity"]) < 1e-6
        assert abs(b["clip_sigmoid_sig"] - a["clip_sigmoid"]) < 1e-6
        assert b["clip_model"] == "clipcrawl-tiny" and b["clip_sigmoid"] is None  # the tiny CLIP is softmax
    assert_verified(root)
