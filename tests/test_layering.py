"""DESIGN.md's import rules, checked on the source: engines never import widget libraries, etc."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dcai_widgets"
WIDGET_LIBS = {"ipywidgets", "bokeh", "voila", "jupyter_bokeh", "anywidget", "IPython"}
ML_LIBS = {"torch", "sklearn", "faiss", "umap", "numba", "pynndescent", "sentence_transformers"}


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module a file imports (relative imports resolved inside the package)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG.parent).with_suffix("").parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[: len(rel) - node.level])
                out.add(".".join(base + ([node.module] if node.module else [])))
            else:
                out.add(node.module)
    return out


def files(sub: str):
    p = PKG / sub
    return [p] if p.suffix == ".py" else sorted(p.rglob("*.py"))


@pytest.mark.parametrize("part", ["lancet", "seals", "metastore", "session.py", "store", "data", "embed",
                                  "neighbors.py", "mapping.py", "simulate.py", "protocols.py", "events.py",
                                  "_validate.py"])
def test_engines_and_core_never_import_widget_libraries(part):
    found = [f for f in files(part) if f.exists()]
    if not found:
        pytest.skip(f"{part} is not in the package yet")
    for f in found:
        for mod in imports_of(f):
            top = mod.split(".")[0]
            assert top not in WIDGET_LIBS, f"{f.relative_to(PKG)} imports {mod}"
            assert not mod.startswith("dcai_widgets.widgets"), f"{f.relative_to(PKG)} imports {mod}"


def test_store_imports_no_ml_library_and_nothing_else_of_the_package():
    for f in files("store"):
        for mod in imports_of(f):
            assert mod.split(".")[0] not in ML_LIBS, f"{f.name} imports {mod}"
            if mod.startswith("dcai_widgets"):
                assert mod.startswith("dcai_widgets.store"), f"{f.name} imports {mod}"


def test_importing_the_package_loads_no_widget_library():
    code = ("import sys, dcai_widgets as dw; s = dw.Session.from_embeddings([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], "
            "['a', 'b']); s.label([0], 'a'); bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{sorted(WIDGET_LIBS)!r}); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_protocols_and_events_import_nothing_of_the_package():
    """The seams are plain declarations: anything may import them without pulling in an engine."""
    for name in ("protocols.py", "events.py"):
        for mod in imports_of(PKG / name):
            assert not mod.startswith("dcai_widgets"), f"{name} imports {mod}"
            assert mod.split(".")[0] not in ML_LIBS, f"{name} imports {mod}"
