"""The import graph of the project: no cycles, and no upward imports.

Layers, bottom to top (a module may import its own layer and the ones below, never one above):
  0  foundation   engine.config, engine.files, engine.dist, engine.logging, engine.checkpoint, renderer
  1  parts        data, models, losses, metrics (the datasets, networks, losses and scores; none runs a job)
  2  loop         engine.loop, engine.run (the training loop and the run boilerplate know no model or dataset)
  3  tasks        tasks (the jobs: configs of whole experiments, wiring parts into the loop)
  4  entries      train_3d.py, train_inpaint.py, evaluate.py, app.py, scripts/
Inside layer 1 the packages stay apart except where listed in PART_DEPS (e.g. data renders synthetic faces).
Every import counts, function-level ones too: a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "renderer", "data", "models", "losses", "metrics", "tasks", "scripts")
LAYERS = {
    "engine.config": 0, "engine.files": 0, "engine.dist": 0, "engine.logging": 0, "engine.checkpoint": 0,
    "engine": 0, "renderer": 0,
    "data": 1, "models": 1, "losses": 1, "metrics": 1,
    "engine.loop": 2, "engine.run": 2,
    "tasks": 3,
    "scripts": 4, "train_3d": 4, "train_inpaint": 4, "evaluate": 4, "app": 4,
}
PART_DEPS = {"data": {"renderer"}, "models": {"renderer"}, "losses": {"models", "renderer"},
             "metrics": {"models", "renderer", "data"}}


def modules() -> dict[str, Path]:
    files = list(ROOT.glob("*.py")) + [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    out = {}
    for p in files:
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def imports_of(source: str) -> set[str]:
    """Every absolute module name a source imports at run time, anywhere in it (``from a import b`` also names
    ``a.b``); imports under ``if TYPE_CHECKING:`` are annotations only, never executed, and are left out."""
    tree = ast.parse(source)
    skip = {id(n) for block in ast.walk(tree) if _type_checking_only(block) for stmt in block.body
            for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports_of(path.read_text()) if m in mods and m != name} for name, path in mods.items()}


def layer(module: str) -> tuple[int, str]:
    """(layer, layer-1 package or '') of a module: its longest prefix in LAYERS."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        prefix = ".".join(parts[:k])
        if prefix in LAYERS:
            return LAYERS[prefix], parts[0] if LAYERS[prefix] == 1 else ""
    raise AssertionError(f"{module}: no layer (add it to LAYERS)")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_upward_imports():
    bad = []
    for m, deps in import_graph().items():
        lm, pm = layer(m)
        for d in deps:
            ld, pd = layer(d)
            if ld > lm or (ld == lm == 1 and pd != pm and pd not in PART_DEPS.get(pm, set())):
                bad.append(f"{m} -> {d}")
    assert not bad, bad


def test_the_checker_sees_cycles_and_lazy_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert imports_of("import os\n\ndef f():\n    from data.pairs import build_faces\n") == \
        {"os", "data.pairs", "data.pairs.build_faces"}  # a lazy import counts
    assert layer("data.pairs") == (1, "data") and layer("engine.loop") == (2, "")


def test_entry_points_import_no_script_and_leave_sys_path_alone():
    """Scripts are thin wrappers over the library: none imports another, and none edits sys.path (the project is
    installed, pyproject.toml's package list, or on PYTHONPATH)."""
    graph = import_graph()
    entries = [m for m in graph if layer(m)[0] == 4]
    assert "scripts.remove_mask" in entries and "train_3d" in entries
    bad = [f"{m} -> {d}" for m in entries for d in graph[m] if d.startswith("scripts")]
    assert not bad, bad
    mods = modules()
    edits = [m for m in entries if "sys.path" in mods[m].read_text()]
    assert not edits, edits


def test_every_package_is_installed():
    """pyproject.toml lists every library package (an editable install of a missing one would not import)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for pkg in PACKAGES if pkg != "scripts"
             for p in (ROOT / pkg).rglob("__init__.py")}
    assert listed == found, (sorted(found - listed), sorted(listed - found))


def test_inference_imports_no_training_task():
    """The photo pipeline, the removal and the exports reach neither training task, even indirectly."""
    graph = import_graph()
    for start in ("tasks.photo", "tasks.removal", "tasks.prior", "tasks.exports"):
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        assert not seen & {"tasks.recon3d", "tasks.inpaint"}, (start, sorted(seen & {"tasks.recon3d", "tasks.inpaint"}))
