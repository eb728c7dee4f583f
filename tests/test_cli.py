"""`dcai-widgets serve`: options are validated with clear messages; the packaged notebook ships."""
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from dcai_widgets.cli import app_notebook, main

ROOT = Path(__file__).resolve().parents[1]


def test_console_script_points_at_main():
    eps = [e for e in entry_points(group="console_scripts") if e.name == "dcai-widgets"]
    assert eps and eps[0].value == "dcai_widgets.cli:main"


def test_packaged_notebook_is_the_repo_notebook_and_builds_the_app():
    packaged = app_notebook()
    assert packaged.is_file()
    assert json.loads(packaged.read_text()) == json.loads((ROOT / "notebooks" / "app.ipynb").read_text())
    code = "".join("".join(c["source"]) for c in json.loads(packaged.read_text())["cells"]
                   if c["cell_type"] == "code")
    assert "app_from_env()" in code


def test_dry_run_passes_settings_to_voila(tmp_path, capsys):
    assert main(["serve", "--data", "digits", "--store", str(tmp_path / "l.db"), "--port", "9123",
                 "--no-browser", "--annotator", "ada", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DCAI_DATA=digits" in out and f"DCAI_STORE={tmp_path / 'l.db'}" in out and "DCAI_ANNOTATOR=ada" in out
    assert "-m voila" in out and "--port=9123" in out and "--no-browser" in out and str(app_notebook()) in out


@pytest.mark.parametrize("args, message", [
    (["--data", "/no/such/file.npz"], "does not exist"),
    (["--store", "/no/such/dir/labels.db"], "does not exist"),
    (["--port", "70000"], "--port"),
    (["--annotator", "<b>eve</b>"], "--annotator"),
])
def test_bad_options_exit_2_with_a_message(args, message, capsys):
    assert main(["serve", *args, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_store_that_is_a_folder_is_refused(tmp_path, capsys):
    assert main(["serve", "--store", str(tmp_path), "--dry-run"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_module_entry_runs_without_a_shell_script(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dcai_widgets.cli", "serve", "--store", str(tmp_path / "x.db"),
                        "--dry-run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "voila" in r.stdout
