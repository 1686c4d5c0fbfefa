"""Face detection for blurring, with a detector that ships inside a package (nothing is downloaded).

The detector is OpenCV's Haar cascade ``haarcascade_frontalface_alt2.xml``, which the
``opencv-python-headless`` wheel (4.x; ``pip install clipcrawl[faces]``) ships under ``cv2.data``.
It finds frontal faces of about 24 px and up on the detection copy (longer side scaled to at most
:data:`DETECT_MAX_SIDE`); profiles and small or occluded faces are missed, so blurring is a
best-effort privacy measure, not a guarantee. Boxes are ``[x0, y0, x1, y1]`` fractions of the image,
the convention of img2dataset's ``bbox_col`` (and :func:`clipcrawl.filters.images.blur.blur_boxes`,
which grows each box by 10% and feathers its edge).

Blurring runs inside the resize step (:mod:`.resize`, ``ResizeOptions.blur_faces``), before the
image is encoded, so unblurred pixels are never written. :class:`BlurFaces` is the same work as a
stage, for tables that already hold encoded images (it decodes, blurs and re-encodes them).
"""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcrawl.base.stage import Stage, ok_mask, set_column

if TYPE_CHECKING:
    from PIL import Image

CASCADE = "haarcascade_frontalface_alt2.xml"
DETECT_MAX_SIDE = 640
MIN_FACE = 24  # pixels on the detection copy
_LOCAL = threading.local()  # a classifier per thread: decode threads must not share one (OpenCV state)


class FaceDetectorUnavailable(RuntimeError):
    pass


def detector() -> Any:
    """This thread's cascade classifier (loaded once per thread)."""
    if getattr(_LOCAL, "detector", None) is None:
        try:
            import cv2
        except ImportError as e:
            raise FaceDetectorUnavailable(
                "face blurring needs OpenCV: pip install 'clipcrawl[faces]' (opencv-python-headless 4.x, which "
                "ships the Haar cascades)") from e
        path = getattr(getattr(cv2, "data", None), "haarcascades", None)
        clf = cv2.CascadeClassifier((path or "") + CASCADE) if path else None
        if clf is None or clf.empty():
            raise FaceDetectorUnavailable(f"OpenCV {cv2.__version__} does not ship {CASCADE} under cv2.data "
                                          "(fix: pip install 'opencv-python-headless>=4.5,<5')")
        cv2.setNumThreads(1)  # one decode worker per core already
        _LOCAL.detector = clf
    return _LOCAL.detector


def detect_faces(image: Image.Image | np.ndarray) -> list[list[float]]:
    """Face boxes ``[x0, y0, x1, y1]`` (fractions of the image) of an RGB/L PIL image or array."""
    import cv2

    a = np.asarray(image)
    if a.ndim == 3:
        a = cv2.cvtColor(a[..., :3], cv2.COLOR_RGB2GRAY)
    h, w = a.shape[:2]
    if min(h, w) < MIN_FACE:
        return []
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    if scale < 1.0:
        a = cv2.resize(a, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    a = cv2.equalizeHist(np.ascontiguousarray(a, dtype=np.uint8))
    found = detector().detectMultiScale(a, scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE, MIN_FACE))
    dh, dw = a.shape[:2]
    boxes = [[x / dw, y / dh, (x + bw) / dw, (y + bh) / dh] for x, y, bw, bh in (found if len(found) else [])]
    return [[round(float(v), 5) for v in b] for b in sorted(boxes)]


def blur_faces_array(a: np.ndarray, extra_boxes: list | None = None) -> tuple[np.ndarray, list[list[float]]]:
    """Detect faces in ``a`` and blur them (plus ``extra_boxes``); returns (pixels, face boxes)."""
    from clipcrawl.filters.images.blur import blur_boxes

    faces = detect_faces(a)
    boxes = [*(extra_boxes or []), *faces]
    return (blur_boxes(a, boxes) if boxes else a), faces


class BlurFaces(Stage):
    """Blur detected faces of the encoded ``image`` of success rows; adds ``num_faces``/``face_bboxes``.

    For tables whose images are already encoded (the download normally blurs before encoding).
    The image is re-encoded in its own format (JPEG at ``quality``).
    """

    name = "blur_faces"

    def __init__(self, quality: int = 95) -> None:
        self.quality = quality

    def setup(self) -> None:
        detector()

    def process(self, table):  # noqa: ANN001, ANN201 - pa.Table
        import pyarrow as pa
        from PIL import Image

        from clipcrawl.schemas.tables import IMAGE_COLUMN

        n = table.num_rows
        if IMAGE_COLUMN not in table.column_names:
            return table
        ok = ok_mask(table)
        images = table.column(IMAGE_COLUMN).to_pylist()
        counts: list[int | None] = [None] * n
        boxes: list[list | None] = [None] * n
        for i in np.flatnonzero(ok):
            data = images[i]
            if not data:
                continue
            im = Image.open(io.BytesIO(data))
            fmt = im.format or "JPEG"
            a = np.asarray(im.convert("RGB") if im.mode not in ("RGB", "L") else im)
            out, faces = blur_faces_array(a)
            counts[i], boxes[i] = len(faces), faces
            if faces:
                buf = io.BytesIO()
                kw = {"quality": self.quality} if fmt in ("JPEG", "WEBP") else {}
                Image.fromarray(out).save(buf, fmt, **kw)
                images[i] = buf.getvalue()
        table = set_column(table, IMAGE_COLUMN, pa.array(images, pa.binary()))
        table = set_column(table, "num_faces", pa.array(counts, pa.int32()))
        return set_column(table, "face_bboxes", pa.array(boxes, pa.list_(pa.list_(pa.float32()))))
