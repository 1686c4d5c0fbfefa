"""``clipcrawl img2dataset --url_list=... --output_folder=...``: img2dataset's command line, on clipcrawl.

Every keyword of :func:`clipcrawl.img2dataset.download` is a flag, in both spellings (``--url_list`` and
``--url-list``), written as python-fire accepts them: ``--flag=value``, ``--flag value``, a bare ``--flag``
(or ``--noflag``) for booleans, lists as ``'["a","b"]'`` or ``a,b``, ``None``; leading positional values fill
``url_list``, ``image_size``, ``output_folder``... in order, as with fire.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

import typer

ORDER = 21
_TRUE, _FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n"}


def _params() -> dict[str, inspect.Parameter]:
    from clipcrawl.pipelines.compat_download import download

    return dict(inspect.signature(download).parameters)


def _kind(p: inspect.Parameter) -> str:
    ann = str(p.annotation)
    if "list" in ann.lower():
        return "list"
    for k in ("bool", "int", "float"):
        if ann.startswith(k) or isinstance(p.default, {"bool": bool, "int": int, "float": float}[k]):
            return k
    return "str"


def convert(name: str, value: str, p: inspect.Parameter) -> Any:
    """One flag's text -> the value fire would pass (None, bool, int, float, list of str, str)."""
    from clipcrawl.schemas.config import ConfigError

    v = value.strip()
    if v in ("None", "none", "null") and (p.default is None or "None" in str(p.annotation)):
        return None
    kind = _kind(p)
    try:
        if kind == "bool":
            if v.lower() in _TRUE | _FALSE:
                return v.lower() in _TRUE
            raise ValueError(v)
        if kind == "int":
            return int(v)
        if kind == "float":
            return float(v)
        if kind == "list":
            if v.startswith(("[", "(")):
                try:
                    return [str(x) for x in ast.literal_eval(v)]
                except (ValueError, SyntaxError):
                    v = v[1:-1]
            return [x.strip().strip("'\"") for x in v.split(",") if x.strip().strip("'\"")]
    except ValueError:
        raise ConfigError(f"--{name}: {value!r} is not a valid {kind}") from None
    return v[1:-1] if len(v) > 1 and v[0] == v[-1] and v[0] in "'\"" else v


def parse_args(args: list[str]) -> dict[str, Any]:
    """img2dataset/fire command-line arguments -> ``download`` keywords."""
    from clipcrawl.schemas.config import ConfigError

    params = _params()
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("--"):
            free = [n for n in positional if n not in out]
            if not free:
                raise ConfigError(f"unexpected argument {a!r}")
            out[free[0]] = convert(free[0], a, params[free[0]])
            continue
        flag, eq, value = a[2:].partition("=")
        name = flag.replace("-", "_")
        if name not in params and name.startswith("no") and _kind(params.get(name[2:], _NONE)) == "bool" and not eq:
            out[name[2:]] = False
            continue
        if name not in params:
            raise ConfigError(f"unknown flag --{flag} (fix: see `clipcrawl img2dataset --help` for img2dataset's "
                              f"flags)")
        if not eq:
            nxt = args[i] if i < len(args) else None
            if _kind(params[name]) == "bool":
                if nxt is not None and nxt.lower() in _TRUE | _FALSE:
                    value, i = nxt, i + 1
                else:
                    value = "true"
            elif nxt is None:
                raise ConfigError(f"--{flag} needs a value")
            else:
                value, i = nxt, i + 1
        out[name] = convert(flag, value, params[name])
    if "url_list" not in out:
        raise ConfigError("--url_list is required (fix: clipcrawl img2dataset --url_list=urls.txt "
                          "--output_folder=images)")
    return out


_NONE = inspect.Parameter("x", inspect.Parameter.KEYWORD_ONLY, default="")


def usage() -> str:
    lines = ["Usage: clipcrawl img2dataset --url_list=URLS [--flag=value ...]", "",
             "img2dataset 1.47's download(), flag for flag (--name or --name-with-dashes), same defaults, "
             "same output.", "",
             "As in img2dataset, private and loopback addresses are fetched by default (--allow_private_networks=False "
             "refuses them); `clipcrawl download` and `clipcrawl run` refuse them unless --allow-private-networks.",
             "On a terminal it prints img2dataset's progress (per-shard worker/total lines, a bar, the final "
             "per-status counts) on stderr; nothing when stderr is not a terminal, or with --progress=False.", "",
             "Flags:"]
    for name, p in _params().items():
        extra = "  [clipcrawl]" if p.kind is p.KEYWORD_ONLY else ""
        default = "" if p.default is inspect.Parameter.empty else f" (default: {p.default!r})"
        lines.append(f"  --{name}{default}{extra}")
    return "\n".join(lines)


def img2dataset(ctx: typer.Context) -> None:
    """img2dataset's command line (img2dataset 1.47 flags, both spellings); `clipcrawl img2dataset --help`."""
    args = list(ctx.args)
    if not args or any(a in ("-h", "--help") for a in args):
        typer.echo(usage())
        raise typer.Exit(0)
    from clipcrawl.pipelines.commands import exit_on_failures
    from clipcrawl.pipelines.compat_download import download

    summary = download(**parse_args(args))  # img2dataset's output on a terminal (--progress=False: none)
    exit_on_failures(summary.failures)


def register(app: typer.Typer) -> None:
    app.command("img2dataset", add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(img2dataset)
