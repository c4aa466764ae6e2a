"""The plugin toolkit is the whole surface plugins use: the built-in checks and the example
plugin import from ``auditkit`` and ``auditkit.toolkit`` only, and the core imports no plugin."""
from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import auditkit
import auditkit.toolkit as toolkit

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SOURCES = sorted(
    [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "examples" / "auditkit-example-plugin" / "auditkit_example").rglob("*.py")]
)
ALLOWED = {"auditkit", "auditkit.toolkit"}
# Deprecated aliases kept for the 0.1 contract: they re-export the ONNX and HTTP model loaders
# from their old place in the transfer plugin (the loaders moved to auditkit.models).
DEPRECATED_ALIASES = {"plugins/auditkit_transfer/onnx_target.py", "plugins/auditkit_transfer/endpoints.py"}


def _auditkit_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of an ``auditkit`` module (not ``auditkit_*``) in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "auditkit":  # `from auditkit import reporters` imports a module too
                found += [(node.lineno, f"auditkit.{a.name}") for a in node.names if a.name not in auditkit.__all__]
    return [(line, m) for line, m in found if m == "auditkit" or m.startswith("auditkit.")]


def test_plugins_import_only_the_toolkit():
    assert len(PLUGIN_SOURCES) > 20
    offenders = []
    for path in PLUGIN_SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        if rel in DEPRECATED_ALIASES:
            continue
        offenders += [f"{rel}:{line}: {module}" for line, module in _auditkit_imports(path) if module not in ALLOWED]
    assert not offenders, "plugins must import auditkit only through auditkit.toolkit:\n" + "\n".join(offenders)


def test_the_core_imports_no_plugin():
    offenders = []
    for path in sorted((ROOT / "auditkit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("auditkit_")]
    assert not offenders


def test_every_toolkit_name_resolves_and_is_documented():
    assert sorted(toolkit.__all__) == sorted(set(toolkit.__all__))
    for name in toolkit.__all__:
        value = getattr(toolkit, name)
        if inspect.isclass(value) or inspect.isfunction(value) or inspect.ismodule(value):
            assert inspect.getdoc(value), f"toolkit.{name} has no docstring"
    # the top-level package's public names are the same objects
    for name in auditkit.__all__:
        if name in toolkit.__all__:
            assert getattr(auditkit, name) is getattr(toolkit, name), name


def test_importing_the_toolkit_loads_no_plugin():
    code = "import sys, auditkit.toolkit; print(sorted(m for m in sys.modules if m.startswith('auditkit_')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("kind", ["white", "black"])
def test_both_kinds_of_model_satisfy_the_target_protocol(kind, tiny_model):
    target = toolkit.Target(tiny_model) if kind == "white" else toolkit.BlackBoxTarget(lambda x: x)
    assert isinstance(target, toolkit.AuditTarget)
