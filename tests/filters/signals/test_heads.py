"""The published heads from their own file formats: state dicts with the real keys and shapes, random
weights, compared with a direct torch computation of the published modules (their code, written out here
as the repos define them: improved-aesthetic-predictor ``simple_inference.py``'s MLP, LAION-AI/aesthetic-predictor's
linear head, LAION-AI/CLIP-based-NSFW-Detector ``src/models.py`` (Keras port) and NeMo Curator's
``H14_NSFW_Detector``)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from clipcrawl.filters.clip.safety_head import load_head  # noqa: E402
from clipcrawl.schemas.configbase import ConfigError  # noqa: E402


class AestheticMLP(nn.Module):  # improved-aesthetic-predictor simple_inference.py (ReLUs commented out there)
    def __init__(self, d=768):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(d, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


class Normalization(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("variance", torch.ones(shape))

    def forward(self, x):
        return (x - self.mean) / (self.variance.sqrt() + 1e-10)


class NSFWModelL14(nn.Module):  # CLIP-based-NSFW-Detector src/models.py
    def __init__(self):
        super().__init__()
        self.norm = Normalization([768])
        self.linear_1, self.linear_2 = nn.Linear(768, 64), nn.Linear(64, 512)
        self.linear_3, self.linear_4 = nn.Linear(512, 256), nn.Linear(256, 1)

    def forward(self, x):
        x = self.norm(x)
        x = torch.relu(self.linear_1(x))
        x = torch.relu(self.linear_2(x))
        x = torch.relu(self.linear_3(x))
        return torch.sigmoid(self.linear_4(x))


class NSFWModelB32(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = Normalization([512])
        self.linear_1, self.linear_2, self.linear_3 = nn.Linear(512, 32), nn.Linear(32, 32), nn.Linear(32, 1)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.norm(x)
        x = torch.relu(self.linear_1(x))
        x = self.dropout(torch.relu(self.linear_2(x)))
        return torch.sigmoid(self.linear_3(x))


class H14(nn.Module):  # NeMo Curator nemo_curator/image/classifiers/nsfw.py
    def __init__(self, d=1024):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(d, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 2048), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(2048, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 256), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 16), nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name.endswith("variance"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.01 + 1e-4)  # embedding-sized variances
            elif name.endswith("mean"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p.shape[-1]) ** 0.5))
    return model.eval()


def _embeddings(n, d, seed=0):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x  # raw: the loader normalises, the reference is given the normalised ones


def _reference(model, x):
    with torch.no_grad():
        return model(torch.nn.functional.normalize(x, dim=-1)).squeeze(-1).numpy()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_aesthetic_mlp_state_dict(tmp_path, suffix):
    model = _randomise(AestheticMLP(), 1)
    sd = model.state_dict()
    assert sorted(sd) == sorted(f"layers.{i}.{k}" for i in (0, 2, 4, 6, 7) for k in ("weight", "bias"))
    path = tmp_path / f"sac+logos+ava1-l14-linearMSE{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    head = load_head(path, "aesthetic", 768)
    assert head.format == "laion-aesthetic-mlp" and head.output == "raw"
    assert head.describe() == f"{path.name} (laion-aesthetic-mlp)"
    x = _embeddings(16, 768)
    np.testing.assert_allclose(head.predict(x.numpy()), _reference(model, x), rtol=1e-4, atol=1e-5)


def test_aesthetic_linear_v1(tmp_path):
    model = _randomise(nn.Linear(768, 1), 2)
    path = tmp_path / "sa_0_4_vit_l_14_linear.pth"
    torch.save(model.state_dict(), path)
    head = load_head(path, "aesthetic", 768)
    assert head.format == "laion-aesthetic-linear"
    x = _embeddings(8, 768, 1)
    np.testing.assert_allclose(head.predict(x.numpy()), _reference(model, x), rtol=1e-4, atol=1e-5)
    assert load_head(path, "punsafe", 768).format == "generic"  # a bare linear head is a sigmoid logit for punsafe


@pytest.mark.parametrize("cls,d", [(NSFWModelL14, 768), (NSFWModelB32, 512)])
def test_laion_nsfw_keras_port(tmp_path, cls, d):
    model = _randomise(cls(), 3)
    sd = model.state_dict()
    assert {"norm.mean", "norm.variance", "linear_1.weight"} <= set(sd)
    path = tmp_path / f"clip_{d}_binary_nsfw_head.pth"
    torch.save(sd, path)
    head = load_head(path, "punsafe", d)
    assert head.format == "laion-nsfw-keras" and head.norm is not None
    x = _embeddings(32, d, 2)
    got, want = head.probabilities(x.numpy()), _reference(model, x)
    assert ((got >= 0) & (got <= 1)).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_h14_nsfw_as_nemo_loads_it(tmp_path):
    model = _randomise(H14(), 4)
    path = tmp_path / "h14_nsfw.pth"
    torch.save(model.state_dict(), path)
    head = load_head(path, "punsafe", 1024)
    assert head.format == "laion-nsfw-h14"
    x = _embeddings(8, 1024, 3)
    np.testing.assert_allclose(head.probabilities(x.numpy()), _reference(model, x), rtol=1e-4, atol=1e-5)


def test_wrong_width_and_broken_norm_are_config_errors(tmp_path):
    model = _randomise(AestheticMLP(), 5)
    path = tmp_path / "a.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ConfigError, match="768-d embeddings but the CLIP model gives 512-d"):
        load_head(path, "aesthetic", 512)
    sd = _randomise(NSFWModelL14(), 6).state_dict()
    sd["norm.mean"] = torch.zeros(10)
    torch.save(sd, tmp_path / "n.pth")
    with pytest.raises(ConfigError, match="norm.mean/variance"):
        load_head(tmp_path / "n.pth", "punsafe")


def test_generic_heads_unchanged(tmp_path):
    """A head in none of the published layouts keeps the old rule (ReLU hidden, sigmoid/softmax out)."""
    seq = _randomise(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2)), 7)
    torch.save(seq.state_dict(), tmp_path / "g.pt")
    head = load_head(tmp_path / "g.pt", "punsafe", 64)
    assert head.format == "generic"
    x = _embeddings(8, 64, 4)
    with torch.no_grad():
        want = torch.softmax(seq(torch.nn.functional.normalize(x, dim=-1)), -1)[:, 1].numpy()
    np.testing.assert_allclose(head.probabilities(x.numpy()), want, rtol=1e-4, atol=1e-6)
