"""Write MDS folders with mosaicml-streaming's own ``MDSWriter``.

Used in-process when ``streaming`` imports here, else run as a script by another Python that has it
(``--mds-python``: mosaicml-streaming pins ``numpy<2.2``, so it often lives in a venv of its own). This file
imports nothing of clipcrawl, so that Python needs only mosaicml-streaming. One child serves a whole export
(importing streaming imports torch: seconds): it reads frames from stdin (a 4-byte big-endian length, then
a pickled message) and answers each ``close`` with a line ``ok N`` (or ``error ...``) on stdout:

    ("open", OUT, {column: encoding}, size_limit)   # a new local MDS folder
    ("sample", {column: value})                      # one sample of it
    ("close",)                                       # finish its shards and index.json
    ("exit",)

    python mds_child.py
"""

from __future__ import annotations

import pickle
import struct
import sys
import traceback
from collections.abc import Iterable
from typing import Any


def write_mds(samples: Iterable[dict], out: str, columns: dict[str, str], size_limit: int | str = "64mb") -> int:
    """Write ``samples`` to the local folder ``out`` (shard files, then its ``index.json``)."""
    from streaming import MDSWriter

    n = 0
    with MDSWriter(out=out, columns=columns, size_limit=size_limit, progress_bar=False) as w:
        for s in samples:
            w.write(s)
            n += 1
    return n


def read_frame(stream: Any) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        return ("exit",)
    (size,) = struct.unpack(">I", head)
    return pickle.loads(stream.read(size))


def frame(msg: Any) -> bytes:
    data = pickle.dumps(msg, protocol=4)
    return struct.pack(">I", len(data)) + data


def serve(stdin: Any, stdout: Any) -> int:
    while True:
        msg = read_frame(stdin)
        if msg[0] == "exit":
            return 0
        if msg[0] != "open":
            raise ValueError(f"expected open, got {msg[0]!r}")
        _, out, columns, size_limit = msg

        def samples() -> Iterable[dict]:
            while True:
                m = read_frame(stdin)
                if m[0] == "close":
                    return
                if m[0] != "sample":
                    raise ValueError(f"expected sample or close, got {m[0]!r}")
                yield m[1]

        try:
            n = write_mds(samples(), out, columns, size_limit)
            stdout.write(f"ok {n}\n")
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
            stdout.write(f"error {type(e).__name__}: {e} {traceback.format_exc()[-300:]!r}\n")
            return 1
        stdout.flush()


if __name__ == "__main__":
    sys.exit(serve(sys.stdin.buffer, sys.stdout))
