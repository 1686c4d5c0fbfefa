"""The package's layers run one way: schemas <- base <- crawler <- filters <- pipelines <- cli.

Every import is counted, also the ones inside functions (lazy imports of heavy dependencies), so a
layer cannot reach up by hiding an import in a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clipcrawl"

#: area -> the clipcrawl areas it may import (besides itself)
ALLOWED = {
    "schemas": set(),
    "assets": set(),
    "base": {"schemas"},
    "crawler": {"base", "schemas"},
    "filters": {"base", "schemas", "crawler", "assets"},
    "pipelines": {"base", "schemas", "crawler", "filters", "assets"},
    "cli": {"base", "schemas", "pipelines"},
    "img2dataset": {"base", "schemas", "pipelines"},  # the img2dataset drop-in API
    "__main__": {"cli"},
    "__init__": set(),
}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                pkg = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names if mod == "clipcrawl"]
    return [(line, m) for line, m in out if m == "clipcrawl" or m.startswith("clipcrawl.")]


def _violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mod = _module_name(path)
        area = _area(mod) if "." in mod else "__init__"
        allowed = ALLOWED.get(area)
        assert allowed is not None, f"{mod}: area {area!r} has no place in the layer map (add it to ALLOWED)"
        for line, target in _imports(path):
            if target == "clipcrawl":
                continue
            to = _area(target)
            if to != area and to not in allowed:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {area} imports {target}")
    return found


def test_layers_run_one_way():
    bad = _violations()
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


@pytest.mark.parametrize("area", ["crawler", "filters", "base", "schemas"])
def test_lower_layers_never_import_pipelines(area):
    for path in (PACKAGE / area).rglob("*.py"):
        for line, target in _imports(path):
            assert not target.startswith("clipcrawl.pipelines"), f"{path}:{line} imports {target}"


def test_the_check_sees_lazy_imports(tmp_path):
    code = "def f():\n    from clipcrawl.pipelines.writer import write_shard\n"
    p = tmp_path / "x.py"
    p.write_text(code)
    assert _imports(p) == [(2, "clipcrawl.pipelines.writer")]
