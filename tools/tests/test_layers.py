"""The harness's layers import only downwards (p2pkpvm/__init__.py names the order).

Every import of every module of the package is read (ast, also imports inside functions) and
its target's layer compared with the importer's: a layer may import from the layers before it
and from its own subpackage, never from a later layer or a sibling of the same rank.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from p2pkpvm.paths import TOOLS

PACKAGE = TOOLS / "p2pkpvm"
# Rank of each layer; bench, plugin are siblings (neither imports the other); cli is on top.
LAYERS = {
    "errors": 0,
    "paths": 0,
    "kernel": 1,
    "vm": 2,
    "net": 3,
    "cluster": 4,
    "scenario": 5,
    "bench": 6,
    "plugin": 6,
    "cli": 7,
    "__main__": 8,
    "__init__": 8,
}


def layer_of(module: str) -> str:
    """'p2pkpvm.net.netem' -> 'net'; 'p2pkpvm' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path = TOOLS) -> str:
    rel = path.relative_to(root).with_suffix("")
    return ".".join(rel.parts)


def imports(path: Path, root: Path = TOOLS) -> list[tuple[int, str]]:
    """(line, module) of every p2pkpvm import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path, root).split(".")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(me[: len(me) - node.level] + ([base] if base else []))
            out.append((node.lineno, base))
            # `from p2pkpvm import kernel` imports a layer by its name
            if base == "p2pkpvm":
                out += [(node.lineno, f"p2pkpvm.{a.name}") for a in node.names]
    return [(n, m) for n, m in out if m == "p2pkpvm" or m.startswith("p2pkpvm.")]


def violations(path: Path, root: Path = TOOLS) -> list[str]:
    mine = layer_of(module_name(path, root))
    bad = []
    for line, target in imports(path, root):
        theirs = layer_of(target)
        if theirs == "__init__" or theirs == mine:
            continue
        if theirs not in LAYERS or LAYERS[theirs] >= LAYERS[mine]:
            bad.append(f"{path.relative_to(root)}:{line}: {mine} imports {target} ({theirs})")
    return bad


def test_every_module_is_in_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert layer_of(module_name(path)) in LAYERS, f"{path}: in no layer"


def test_imports_go_only_downwards() -> None:
    bad = [v for path in sorted(PACKAGE.rglob("*.py")) for v in violations(path)]
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("where", "source", "caught"),
    [
        ("vm/x.py", "from p2pkpvm.cluster.cluster import Cluster\n", True),
        ("vm/x.py", "def f():\n    from p2pkpvm.scenario import toolout\n", True),
        ("bench/x.py", "from p2pkpvm.plugin import hooks\n", True),
        ("net/x.py", "from ..cluster import cluster\n", True),
        ("net/x.py", "from p2pkpvm import cli\n", True),
        ("cluster/x.py", "from p2pkpvm.net.netns import Netns\n", False),
        ("cluster/x.py", "from . import remote\n", False),
    ],
)
def test_the_check_catches_an_upward_import(
    tmp_path: Path, where: str, source: str, caught: bool
) -> None:
    """The check itself can fail: a planted upward import is reported."""
    root = tmp_path / "tools"
    f = root / "p2pkpvm" / where
    f.parent.mkdir(parents=True)
    f.write_text(source)
    assert bool(violations(f, root)) == caught, violations(f, root)


def test_every_harness_error_derives_from_one_base() -> None:
    """Every exception class the package defines is a HarnessError (the CLI prints those as
    one line, never a traceback)."""
    import p2pkpvm
    from p2pkpvm.errors import HarnessError

    bad = []
    for info in pkgutil.walk_packages(p2pkpvm.__path__, "p2pkpvm."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            own = cls.__module__ == info.name
            if own and issubclass(cls, BaseException) and not issubclass(cls, HarnessError):
                bad.append(f"{info.name}.{cls.__name__}")
    assert not bad, f"exceptions outside the HarnessError tree: {bad}"
