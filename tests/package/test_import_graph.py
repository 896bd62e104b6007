"""The installed package's import graph: no circles, and no layer imports one above it."""

from __future__ import annotations

import subprocess
import sys

from brainstream import import_graph


def test_the_package_has_no_import_cycles_and_no_upward_imports() -> None:
    edges = import_graph._without_parent_edges(import_graph.graph())
    assert len(edges) > 100  # every module was found, in all four folders
    assert {import_graph.layer_of(m) for m in edges} == {0, 1, 2, 3}
    assert import_graph.cycles(edges) == []
    assert import_graph.upward_imports(edges) == []


def test_the_checker_finds_a_cycle_and_an_upward_import() -> None:
    edges = {
        "brainstream.models.a": {"brainstream.models.b", "brainstream.realtime.x"},
        "brainstream.models.b": {"brainstream.models.a"},
        "brainstream.realtime.x": set(),
    }
    assert import_graph.cycles(edges) == [["brainstream.models.a", "brainstream.models.b"]]
    assert import_graph.upward_imports(edges) == [("brainstream.models.a", "brainstream.realtime.x")]


def test_imports_inside_functions_count(tmp_path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "def f():\n    from brainstream.models import gallery\n    import brainstream.realtime.bus\n"
    )
    known = {"brainstream.models", "brainstream.models.gallery", "brainstream.realtime.bus"}
    assert import_graph.imports_of("brainstream.models.x", source, known) == {
        "brainstream.models.gallery",
        "brainstream.realtime.bus",
    }


def test_the_command_reports_a_clean_graph() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "brainstream.import_graph"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no cycles; no upward imports" in out.stdout
