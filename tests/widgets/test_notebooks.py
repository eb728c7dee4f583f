"""The quick-start notebook runs top to bottom (nbclient) and shows widgets; the app notebook builds the App."""
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(path: Path, tmp_path: Path, timeout: int = 300):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


@pytest.mark.timeout(400)
def test_quickstart_runs_top_to_bottom(tmp_path):
    nb = run(ROOT / "notebooks" / "01-quickstart.ipynb", tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) >= 5  # card, grid, panel, map, app
    text = "".join(o.get("text", "") for o in outputs)
    assert "id,label" in text  # the export printed the CSV header
