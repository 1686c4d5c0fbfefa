"""Choosing one representative per duplicate group, and recording the others.

The keep rule orders rows by highest ``clip_similarity``, then largest
``original_width * original_height``, then input order. Grouping is greedy "leader" clustering in
that order: the best undecided row is kept and every undecided row within the method's threshold
of it becomes its duplicate. Unlike connected components this never chains (A~B, B~C, A!~C), so
``duplicate_of`` always names a sample that is itself within the threshold.

Rows are grouped through *nodes*: a node is one value (a URL hash, a pHash, or a single row for
embeddings) with its member rows; edges join nodes that are near each other. Touching a node
decides all its members at once, so the work is O(rows + edges).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def keep_rank(table: pa.Table) -> np.ndarray:
    """rank[i] (0 = kept first) by clip_similarity desc, original area desc, input order."""
    n = table.num_rows

    def col(name: str, fill: float) -> np.ndarray:
        if name not in table.column_names:
            return np.full(n, fill)
        arr = table.column(name).cast(pa.float64())
        return pc.fill_null(arr, fill).to_numpy().astype(np.float64)

    clip = np.nan_to_num(col("clip_similarity", -np.inf), nan=-np.inf)
    area = col("original_width", 0) * col("original_height", 0)
    order = np.lexsort((np.arange(n), -area, -clip))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


@dataclass
class Marks:
    """Decisions of one dedup pass over a batch: which row duplicates what, how, and why."""

    n: int
    active: np.ndarray  # rows still taking part (status success, not yet marked)
    duplicate_of: list[str | None] = field(default_factory=list)
    method: list[str | None] = field(default_factory=list)
    message: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.duplicate_of = [None] * self.n
        self.method = [None] * self.n
        self.message = [None] * self.n

    def mark(self, rows: Sequence[int], of: Sequence[str], method: str, messages: Sequence[str]) -> int:
        count = 0
        for r, o, m in zip(rows, of, messages):
            if not self.active[r]:
                continue
            self.active[r] = False
            self.duplicate_of[r], self.method[r], self.message[r] = o, method, m
            count += 1
        return count

    @property
    def marked(self) -> np.ndarray:
        return np.array([m is not None for m in self.method], dtype=bool)


@dataclass
class Leaders:
    """Result of greedy grouping: ``leader[i]`` is the kept row of row i's group or -1; ``via[i]``
    the node-edge index that linked it (-1 when it shares the leader's node)."""

    leader: np.ndarray
    via: np.ndarray


def greedy_leaders(node_of: np.ndarray, rank: np.ndarray, edge_a: np.ndarray, edge_b: np.ndarray) -> Leaders:
    """Greedy grouping of rows (``node_of[i]`` = node id of row i, -1 = takes no part).

    Nodes are ``0..max(node_of)``; edges join nodes. Rows of one node are mutual duplicates.
    """
    n = len(node_of)
    leader = np.full(n, -1, dtype=np.int64)
    via = np.full(n, -1, dtype=np.int64)
    part = np.flatnonzero(node_of >= 0)
    if not len(part):
        return Leaders(leader, via)
    n_nodes = int(node_of[part].max()) + 1
    # node -> member rows (sorted by rank)
    member_order = part[np.lexsort((rank[part], node_of[part]))]
    counts = np.bincount(node_of[member_order], minlength=n_nodes)
    starts = np.concatenate([[0], np.cumsum(counts)])
    # node adjacency (both directions), with the edge index kept for messages
    ea = np.concatenate([edge_a, edge_b]).astype(np.int64)
    eb = np.concatenate([edge_b, edge_a]).astype(np.int64)
    eid = np.concatenate([np.arange(len(edge_a)), np.arange(len(edge_a))])
    order = np.argsort(ea, kind="stable")
    ea, eb, eid = ea[order], eb[order], eid[order]
    adj_start = np.searchsorted(ea, np.arange(n_nodes + 1))
    interesting = (counts > 1) | (np.diff(adj_start) > 0)
    rows = part[interesting[node_of[part]]]
    rows = rows[np.argsort(rank[rows], kind="stable")]
    cleared = np.zeros(n_nodes, dtype=bool)
    decided = np.zeros(n, dtype=bool)
    for u in rows.tolist():
        if decided[u]:
            continue
        decided[u] = True
        nu = node_of[u]
        if not cleared[nu]:
            cleared[nu] = True
            for v in member_order[starts[nu] : starts[nu + 1]].tolist():
                if not decided[v]:
                    decided[v], leader[v] = True, u
        for j in range(adj_start[nu], adj_start[nu + 1]):
            w = eb[j]
            if cleared[w]:
                continue
            cleared[w] = True
            for v in member_order[starts[w] : starts[w + 1]].tolist():
                if not decided[v]:
                    decided[v], leader[v], via[v] = True, u, eid[j]
    return Leaders(leader, via)
