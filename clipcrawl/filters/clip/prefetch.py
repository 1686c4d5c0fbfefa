"""Decode + preprocess images and tokenize captions in worker threads, ahead of the model.

PIL's decoders and resamplers and torch's tensor ops release the GIL, so a small thread pool keeps
the next batches ready while the model runs the current one (``depth`` batches in flight). Every
image is guarded: a pixel cap checked on the header before decoding, truncated/corrupt files raise
(no ``LOAD_TRUNCATED_IMAGES``), and a per-batch deadline turns a stuck decode into a
``failed_to_score`` row instead of a hang.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

#: Images with more pixels than this are refused before decoding (a decompression-bomb guard).
MAX_PIXELS = 120_000_000
DECODE_TIMEOUT_S = 60.0


@dataclass
class PreparedBatch:
    """One model batch. ``rows`` index the input; ``errors[i]`` is set when image i failed."""

    rows: list[int]
    pixels: Any  # torch.FloatTensor (n_ok, 3, H, W) of the images that decoded, or None
    ok: list[bool]  # per row: image decoded
    errors: list[str | None]
    tokens: Any  # torch.LongTensor (len(rows), context) of every row's caption
    #: further models (Prefetcher's ``more``): (pixels, tokens) each, from the same decoded images
    more: list[tuple[Any, Any]] | None = None


@dataclass
class SplitPreprocess:
    """open_clip's eval transform cut in two: the PIL steps (resize, crop, RGB) run in the decode
    threads and return uint8 arrays; ToTensor + Normalize run once per batch in the caller. Same
    arithmetic as the transform, but no torch ops (and their thread pools) inside the workers."""

    pil: Callable[[Any], Any]
    mean: Any
    std: Any

    def finish(self, arrays: list[Any]) -> Any:
        """uint8 HWC arrays -> normalised float32 NCHW tensor. numpy, not torch: the same float32
        operations in the same order (so the same bits), without waking torch's thread pool for
        a few milliseconds of element-wise work."""
        import numpy as np
        import torch

        x = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32)
        x /= np.float32(255)
        x -= self.mean.reshape(1, -1, 1, 1)
        x /= self.std.reshape(1, -1, 1, 1)
        return torch.from_numpy(x)


def split_preprocess(preprocess: Callable[[Any], Any]) -> SplitPreprocess | None:
    """A :class:`SplitPreprocess` for a torchvision ``Compose`` of PIL-only steps + ToTensor + Normalize;
    a preprocess that is already split (the tiny model's torch-free one) is used as is."""
    import numpy as np

    if callable(getattr(preprocess, "pil", None)) and callable(getattr(preprocess, "finish", None)):
        return preprocess  # type: ignore[return-value]
    try:
        from torchvision import transforms as T
    except ImportError:
        return None

    steps = list(getattr(preprocess, "transforms", []))
    to_tensor = isinstance(steps[-2], T.ToTensor) or type(steps[-2]).__name__ == "MaybeToTensor" if len(steps) >= 2 else False
    if len(steps) < 2 or not to_tensor or not isinstance(steps[-1], T.Normalize):
        return None
    pil_safe = (T.Resize, T.CenterCrop)
    for t in steps[:-2]:
        if not (isinstance(t, pil_safe) or type(t).__name__ in ("MaybeConvertMode", "ResizeKeepRatio")
                or getattr(t, "__name__", "") == "_convert_to_rgb"):
            return None
    head = T.Compose(steps[:-2])

    def pil(img: Any) -> Any:
        out = head(img)
        if out.mode != "RGB":
            out = out.convert("RGB")
        return np.asarray(out, dtype=np.uint8)

    norm = steps[-1]
    return SplitPreprocess(pil, np.asarray(norm.mean, dtype=np.float32), np.asarray(norm.std, dtype=np.float32))


def decode_image(data: bytes, preprocess: Callable[[Any], Any], max_pixels: int = MAX_PIXELS) -> Any:
    """Encoded bytes -> preprocessed tensor; raises ValueError with a short reason."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ValueError(f"image has {w}x{h} pixels, over the {max_pixels} limit")
            img.load()
            rgb = img.convert("RGB")
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError("cannot identify image file") from None
    except (OSError, SyntaxError, Image.DecompressionBombError, EOFError) as e:
        raise ValueError(f"cannot decode image: {' '.join(str(e).split())[:120]}") from None
    return preprocess(rgb)


def _finish(split: SplitPreprocess | None, tensors: list[Any]) -> Any:
    if not tensors:
        return None
    if split is not None:
        return split.finish(tensors)
    import torch

    return torch.stack(tensors)


class Prefetcher:
    """Iterate prepared batches of ``images``/``captions`` with decoding running ahead in threads."""

    def __init__(
        self,
        preprocess: Callable[[Any], Any],
        tokenizer: Callable[[list[str]], Any],
        workers: int | None = None,
        depth: int = 2,
        timeout: float = DECODE_TIMEOUT_S,
        more: Sequence[tuple[Callable[[Any], Any], Callable[[list[str]], Any]]] = (),
    ) -> None:
        """``more``: (preprocess, tokenizer) of further models; each image is decoded once and every
        distinct preprocess (by its repr: sizes, interpolation, mean/std) runs on the decoded pixels."""
        self.split = split_preprocess(preprocess)
        self.preprocess = self.split.pil if self.split is not None else preprocess
        self.tokenizer = tokenizer
        self.more_tokenizers = [t for _, t in more]
        self._finishers: list[Any] = [self.split]  # per distinct preprocess: its SplitPreprocess or None
        self._heads: list[Callable[[Any], Any]] = [self.preprocess]
        self._which: list[int] = []  # per further model: index into _heads
        keys = [repr(preprocess)]
        for pre, _ in more:
            k = repr(pre)
            if k in keys:
                self._which.append(keys.index(k))
                continue
            sp = split_preprocess(pre)
            keys.append(k)
            self._finishers.append(sp)
            self._heads.append(sp.pil if sp is not None else pre)
            self._which.append(len(keys) - 1)
        if more:
            heads = self._heads
            self.preprocess = lambda rgb: [h(rgb) for h in heads]  # one decode, every model's pixels
        self.workers = workers or max(1, min(8, (os.cpu_count() or 2)))
        self.depth = max(1, depth)
        self.timeout = timeout
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Prefetcher:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clip-decode")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            # never wait on a stuck decoder; its thread finishes (or not) in the background
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _submit(self, rows: list[int], images: Sequence[bytes], captions: Sequence[str]) -> tuple:
        assert self._pool is not None
        futs = [self._pool.submit(decode_image, images[i], self.preprocess) for i in rows]
        texts = [captions[i] for i in rows]
        tok = self._pool.submit(self.tokenizer, texts)
        more = [self._pool.submit(t, texts) for t in self.more_tokenizers]
        return rows, futs, (tok, more)

    def _collect(self, job: tuple) -> PreparedBatch:
        import time

        rows, futs, (tok, more_tok) = job
        deadline = time.monotonic() + self.timeout
        tensors, ok, errors = [], [], []
        for f in futs:
            try:
                tensors.append(f.result(timeout=max(0.0, deadline - time.monotonic())))
                ok.append(True)
                errors.append(None)
            except FutureTimeout:
                f.cancel()
                ok.append(False)
                errors.append(f"image decode timed out after {self.timeout:.0f}s")
            except ValueError as e:
                ok.append(False)
                errors.append(str(e))
        tokens = tok.result()
        if not self.more_tokenizers:
            return PreparedBatch(rows, _finish(self.split, tensors), ok, errors, tokens)
        per_head = [_finish(f, [t[j] for t in tensors]) for j, f in enumerate(self._finishers)]
        more = [(per_head[j], t.result()) for j, t in zip(self._which, more_tok)]
        return PreparedBatch(rows, per_head[0], ok, errors, tokens, more)

    def batches(
        self, rows: Sequence[int], images: Sequence[bytes], captions: Sequence[str], batch_size: int
    ) -> Iterator[PreparedBatch]:
        """Yield batches of ``rows`` in order; ``depth`` batches are being prepared while one is used."""
        chunks = [list(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
        pending: deque[Future | tuple] = deque()
        it = iter(chunks)
        for chunk in it:
            pending.append(self._submit(chunk, images, captions))
            if len(pending) >= self.depth:
                break
        while pending:
            job = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(self._submit(nxt, images, captions))
            yield self._collect(job)
