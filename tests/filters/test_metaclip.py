"""MetaCLIP balancing: expectation per entry within a statistical bound (fixed seed), exact sets."""

import math

import pyarrow as pa

from clipcrawl.filters.metaclip import Matcher, apply_balance, load_entries
from clipcrawl.schemas.config import BalanceConfig


def _table(caps, prefix):
    n = len(caps)
    return pa.table({"key": [f"{prefix}{i:05d}" for i in range(n)], "caption": caps,
                     "status": ["success"] * n, "error_message": [None] * n})


def test_shipped_entries_and_substring_matching():
    entries = load_entries()
    assert len(entries) == 998 and "goldfish" in entries and "great white shark" in entries
    m = Matcher(["dog", "hot dog", "cat"])
    assert m.match("A HOT  Dog stand") == [0, 1] and m.match("category") == [2] and m.match(None) == []


def test_expectation_per_entry_within_bound():
    caps = (["a photo of a dog"] * 2000 + ["a cat on a sofa"] * 300 + ["a dog and a cat"] * 100
            + ["a goldfish in a bowl"] * 20 + ["nothing to see"] * 7)
    tables = [_table(caps[i::3], f"s{i}-") for i in range(3)]  # three shards
    t = 100
    out, rep = apply_balance(tables, BalanceConfig(enabled=True, t=t, seed=7), entries=["dog", "cat", "goldfish"])
    assert rep.before.tolist() == [2100, 400, 20]
    # expected kept per entry: sum over its pairs of min(1, t / count of the pair's rarest entry)
    p_dog, p_cat = t / 2100, t / 400
    exp = {"dog": 2000 * p_dog + 100 * p_cat, "cat": 300 * p_cat + 100 * p_cat, "goldfish": 20}
    var = {"dog": 2000 * p_dog * (1 - p_dog) + 100 * p_cat * (1 - p_cat), "cat": 400 * p_cat * (1 - p_cat),
           "goldfish": 0}
    for i, e in enumerate(["dog", "cat", "goldfish"]):
        assert abs(rep.after[i] - exp[e]) <= 4 * math.sqrt(var[e]) + 1e-9, (e, rep.after[i], exp[e])
    assert rep.after[2] == 20  # rare entries are kept whole
    statuses = [s for t_ in out for s in t_.column("status").to_pylist()]
    assert statuses.count("success") == rep.rows_after and rep.unmatched == 7
    msgs = {m for t_ in out for m in t_.column("error_message").to_pylist() if m}
    assert "balance: caption matches no metadata entry" in msgs
    assert any(m.startswith("balance: sampled out: rarest entry 'dog' has 2100 matches") for m in msgs)
    # the same seed gives the same kept set whatever the sharding
    one, rep1 = apply_balance([_table(caps, "x")], BalanceConfig(t=t, seed=7), entries=["dog", "cat", "goldfish"])
    keys3 = sorted(k for t_ in out for k, s in zip(t_.column("key").to_pylist(), t_.column("status").to_pylist())
                   if s == "success")
    assert len(keys3) == rep.rows_after and rep1.before.tolist() == rep.before.tolist()


def test_exact_keep_set_small():
    tab = _table(["a dog", "a cat", "a dog and a cat", "a bird", "a dog"], "k")
    out, rep = apply_balance([tab], BalanceConfig(t=5, keep_unmatched=True), entries=["dog", "cat"])
    assert out[0].column("status").to_pylist() == ["success"] * 5  # counts <= t: p = 1; unmatched kept
    tab2 = tab.set_column(2, "status", pa.array(["success", "filtered_text", "success", "success", "success"]))
    out2, rep2 = apply_balance([tab2], BalanceConfig(t=5), entries=["dog", "cat"])
    assert out2[0].column("status").to_pylist() == ["success", "filtered_text", "success", "filtered_balance",
                                                    "success"]
    assert rep2.before.tolist() == [3, 1]
    out3, _ = apply_balance(out2, BalanceConfig(t=5, keep_unmatched=True), entries=["dog", "cat"])  # re-applied
    assert out3[0].column("status").to_pylist() == ["success", "filtered_text", "success", "success", "success"]
