"""``nsfw`` signal: NudeNet's bundled ``320n.onnx`` detector (MIT, extra ``[nudity]``).

* ``nsfw_detections``: every detection NudeNet returns (its 18 body-part classes, exposed and covered, faces,
  feet ...; score >= its 0.2, NMS 0.45) with the box as ``[x0, y0, x1, y1]`` fractions of the image;
* ``nsfw_score`` (0-1): the highest score among the explicit classes :data:`EXPLICIT` (exposed breasts,
  genitalia, buttocks, anus), 0 when none is detected. ``signals.max_nsfw_score`` drops rows above it.

The image is handed over as OpenCV's BGR array, what NudeNet's own ``detect(path)`` reads from a file.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from clipcrawl.filters.signals.base import Signal, default_threads, ort_providers

EXPLICIT = frozenset({"FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
                      "BUTTOCKS_EXPOSED", "ANUS_EXPOSED"})


def nsfw_score(detections: list[dict[str, Any]]) -> float:
    return max((float(d["score"]) for d in detections if d["label"] in EXPLICIT), default=0.0)


class NsfwSignal(Signal):
    name: ClassVar[str] = "signal_nsfw"
    signal: ClassVar[str] = "nsfw"
    columns: ClassVar[tuple[str, ...]] = ("nsfw_score", "nsfw_detections")
    _transient = ("detector",)

    def __init__(self, threads: int | None = None, device: str = "auto") -> None:
        self.threads, self.device = threads, device
        self.detector = None

    def setup(self) -> None:
        import onnxruntime as ort
        from nudenet import NudeDetector

        det = NudeDetector()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = default_threads(self.threads)
        opts.inter_op_num_threads = 1
        det.onnx_session = ort.InferenceSession(self.model_path(), sess_options=opts,
                                                providers=ort_providers(self.device))
        self.detector = det

    @staticmethod
    def model_path() -> str:
        import os

        import nudenet

        return os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")

    def source(self) -> str:
        return f"nudenet {version('nudenet')} bundled 320n.onnx (MIT)"

    def detect(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        self.ready()
        h, w = pixels.shape[:2]
        out = []
        for d in self.detector.detect(np.ascontiguousarray(pixels[:, :, ::-1])):
            x, y, bw, bh = (float(v) for v in d["box"])
            out.append({"label": str(d["class"]), "score": float(d["score"]),
                        "box": [x / w, y / h, min(1.0, (x + bw) / w), min(1.0, (y + bh) / h)]})
        return out

    def compute_one(self, pixels: np.ndarray | None, caption: str, row: int, table: pa.Table) -> dict[str, Any]:
        if pixels is None:
            return {}
        dets = self.detect(pixels)
        return {"nsfw_score": nsfw_score(dets), "nsfw_detections": dets}
