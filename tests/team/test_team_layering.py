"""DESIGN.md's rule for the team engine: dcai_widgets/team never imports widget libraries or panels."""
import ast
from pathlib import Path

TEAM = Path(__file__).resolve().parents[2] / "dcai_widgets" / "team"
WIDGET_LIBS = {"ipywidgets", "bokeh", "voila", "jupyter_bokeh", "anywidget", "IPython"}


def test_team_engine_imports_no_widgets():
    files = sorted(TEAM.rglob("*.py"))
    assert files
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [("." * node.level) + (node.module or "")] if isinstance(node, ast.ImportFrom) else [])
            for mod in names:
                assert mod.split(".")[0] not in WIDGET_LIBS, f"{f.name} imports {mod}"
                assert "widgets" not in mod.lstrip(".").split(".")[:2], f"{f.name} imports {mod}"
