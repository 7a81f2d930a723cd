"""The code's shape as a newcomer meets it: no import cycles, and importing any module does nothing.

Every module of the core, the worker, the API and the CLI imports in a process with an empty
environment without reading a setting, building an app, connecting a signal handler or touching the
disk; and the graph of module-level imports between them has no cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("certctl_notify", "workers", "api", "cli")


def modules() -> dict[str, Path]:
    """Every module of our packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def module_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``name`` imports when it is imported (not those imported inside functions).

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``; a
    package's own ``__init__`` is not counted as a dependency of its submodules (Python initialises
    the parent first whatever the submodule says).
    """
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def test_the_import_graph_has_no_cycle():
    known = modules()
    graph = {name: module_level_imports(name, path, set(known)) for name, path in known.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target] if target in trail else [node, target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_core_imports_neither_the_worker_nor_the_api_nor_the_cli():
    known = modules()
    for name, path in known.items():
        if name.startswith("certctl_notify"):
            outside = {m for m in module_level_imports(name, path, set(known)) if not m.startswith("certctl_notify")}
            assert outside == set(), f"{name} imports {outside}"


PROBE = """
import gc, importlib, json, os, sys
import celery._state, celery.signals, flask
names = json.loads(sys.argv[1])
before = {s: len(getattr(celery.signals, s).receivers or ()) for s in dir(celery.signals)
          if hasattr(getattr(celery.signals, s), "receivers")}
for name in names:
    importlib.import_module(name)
after = {s: len(getattr(celery.signals, s).receivers or ()) for s in before}
print(json.dumps({
    "celery_apps": len(list(celery._state._get_active_apps())),
    "flask_apps": sum(isinstance(o, flask.Flask) for o in gc.get_objects()),
    "signals_connected": {s: after[s] - before[s] for s in before if after[s] != before[s]},
    "files": sorted(os.listdir(".")),
}))
"""


def test_every_module_imports_in_an_empty_environment_and_does_nothing(tmp_path):
    # Given a process with no CERTCTL_* variable (not even a database or broker URL) in an empty folder
    names = sorted(modules())
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    # When every module of the core, the worker, the API and the CLI is imported
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(names)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    # Then nothing failed, no app was built, no signal handler connected, and no file written
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "celery_apps": 0, "flask_apps": 0, "signals_connected": {}, "files": []}
