"""CLIP scoring: model loading, the fast CPU path, ``ScoreClip`` / ``ApplyClipThreshold`` stages,
zero-shot tags and clip-retrieval embeddings. Heavy imports (torch, open_clip, onnxruntime) happen
inside functions, so importing this package is cheap."""

from clipcrawl.filters.clip.model import ClipWeightsUnavailable, LoadedClip, load_clip
from clipcrawl.filters.clip.score import ApplyClipThreshold, ScoreClip

__all__ = ["ApplyClipThreshold", "ClipWeightsUnavailable", "LoadedClip", "ScoreClip", "load_clip"]
