"""The import graph of the installed package, read from its source: cycles and upward imports.

``python -m brainstream.import_graph`` prints both (exit 1 if any). Every ``import`` counts, also those inside
functions: a deferred import still ties two modules together. The layers, lowest first, are
``models`` < ``realtime`` < ``calibration`` < the application (``brainstream.cli`` and the top-level modules).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = ("brainstream.models", "brainstream.realtime", "brainstream.calibration")


def package_roots() -> dict[str, Path]:
    """Import name -> folder of every package under ``brainstream`` (they may live in different folders)."""
    import brainstream.calibration
    import brainstream.models
    import brainstream.realtime

    return {
        "brainstream": Path(brainstream.__file__).parent,
        **{m.__name__: Path(m.__file__).parent for m in (brainstream.models, brainstream.realtime,
                                                          brainstream.calibration)},
    }  # fmt: skip


def module_files() -> dict[str, Path]:
    """Module name -> source file for every module of the package."""
    found: dict[str, Path] = {}
    for name, root in package_roots().items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if name == "brainstream" and parts and parts[0] in {"models", "realtime", "calibration"}:
                continue
            found[".".join([name, *parts])] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` imports (``from a import b`` counts ``a.b`` when it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def layer_of(module: str) -> int:
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return len(LAYERS)  # the application


def upward_imports(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a lower layer into a higher one. A package's ``__init__`` importing its parent package
    ``brainstream`` (for the version) is not counted: every submodule's import runs it anyway."""
    return sorted(
        (src, dst)
        for src, dsts in edges.items()
        for dst in dsts
        if layer_of(dst) > layer_of(src) and dst != "brainstream"
    )


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            # a package imports its own submodules to re-export them; the submodule importing its package
            # back only runs the package's __init__, which is no circle of code
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _without_parent_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    # importing a parent package only runs its __init__ (done anyway to reach the module): not a dependency
    return {src: {d for d in dsts if not src.startswith(d + ".")} for src, dsts in edges.items()}


def main() -> int:
    edges = _without_parent_edges(graph())
    found_cycles = cycles(edges)
    upward = upward_imports(edges)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports")
    for component in found_cycles:
        print("cycle: " + " <-> ".join(component))
    for src, dst in upward:
        print(f"upward import: {src} -> {dst}")
    if not found_cycles and not upward:
        print(f"no cycles; no upward imports (layers: {' < '.join(LAYERS)} < application)")
    return 1 if found_cycles or upward else 0


if __name__ == "__main__":
    sys.exit(main())
