"""The unit everything plugs into.

A :class:`Stage` is cheap to construct and picklable (config only). Heavy state (an HTTP
session, a CLIP model) is created in :meth:`Stage.setup`, once per worker. ``__call__`` takes a
``pyarrow.Table`` of samples and returns one with **every row kept**: it adds columns and moves
``status`` off ``"success"`` with an ``error_message`` of the form ``"<stage name>: <reason>"``.
Only bugs and infrastructure failures raise; they fail the shard, which is retried or resumed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.schemas.status import Status


class ProgressSink(Protocol):
    """What a stage reports progress to (:class:`clipcrawl.base.progress.Progress` is one)."""

    def update(self, n: int = 1, **fields: Any) -> None: ...


class Stage:
    """Base class: ``setup()`` once per worker, then ``__call__(table) -> table`` per batch.

    A stage that processes rows one by one for long (fetching, CLIP) sets ``reports_progress`` and
    calls :meth:`tick` per row done; the shard loop then gives it a bar as ``progress``.
    """

    name: ClassVar[str] = "stage"
    reports_progress: ClassVar[bool] = False
    #: what one worker running this stage needs beyond a CPU, e.g. ``{"gpu": 0.25}`` (a share of a GPU);
    #: the Ray engine turns it into actor resources when the cluster has them (see :meth:`needs`)
    resources: ClassVar[dict[str, float]] = {}

    _is_setup: bool = False
    progress: ProgressSink | None = None

    def tick(self, n: int = 1, **fields: Any) -> None:
        if self.progress is not None:
            self.progress.update(n, **fields)

    def needs(self) -> dict[str, float]:
        """This instance's resources (a stage configured for the CPU may drop its GPU wish)."""
        return dict(self.resources)

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Create heavy per-worker state. Called once before the first batch."""

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release what setup() created."""

    def process(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError

    def ready(self) -> Stage:
        """Set the stage up if it is not yet (``__call__`` does it on the first batch)."""
        if not self._is_setup:
            self.setup()
            self._is_setup = True
        return self

    def __call__(self, table: pa.Table) -> pa.Table:
        self.ready()
        out = self.process(table)
        if out.num_rows != table.num_rows:
            raise AssertionError(f"stage {self.name} changed the row count {table.num_rows} -> {out.num_rows}")
        return out

    def __getstate__(self) -> dict[str, Any]:
        # Only configuration travels to workers; heavy state is rebuilt by setup() there.
        state = dict(self.__dict__)
        state.pop("_is_setup", None)
        state.pop("progress", None)
        for k in getattr(self, "_transient", ()):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for k in getattr(self, "_transient", ()):  # heavy state comes back empty; setup() rebuilds it
            self.__dict__.setdefault(k, None)


def ok_mask(table: pa.Table) -> np.ndarray:
    """Boolean numpy mask of rows whose status is still ``success``."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=bool)
    return pc.equal(table.column("status"), Status.SUCCESS.value).to_numpy(zero_copy_only=False).astype(bool)


def set_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray | Sequence[Any], type=None) -> pa.Table:
    """Replace or append column ``name``."""
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(values, type=type)
    elif type is not None and values.type != type:
        values = values.cast(type)
    idx = table.schema.get_field_index(name)
    if idx >= 0:
        return table.set_column(idx, name, values)
    return table.append_column(name, values)


def mark(
    table: pa.Table,
    mask: np.ndarray | Iterable[bool],
    status: Status,
    stage: str,
    messages: str | Sequence[str | None],
) -> pa.Table:
    """Move rows selected by ``mask`` **that are still success** to ``status``.

    ``messages`` is one reason for all rows or one per row; stored as ``"<stage>: <reason>"``.
    Rows already failed keep their first failure, so the earliest cause is what users see.
    """
    mask = np.asarray(mask, dtype=bool) & ok_mask(table)
    if not mask.any():
        return table
    statuses = table.column("status").to_pylist()
    errors = table.column("error_message").to_pylist() if "error_message" in table.column_names else [None] * len(mask)
    for i in np.flatnonzero(mask):
        msg = messages if isinstance(messages, str) else messages[i]
        statuses[i] = status.value
        errors[i] = f"{stage}: {msg}" if msg else stage
    table = set_column(table, "status", pa.array(statuses, pa.string()))
    return set_column(table, "error_message", pa.array(errors, pa.string()))

