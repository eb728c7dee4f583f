"""`dcai-widgets serve | revoke | backup`: options are validated with clear messages; data, store and port
are checked before anything is served; the packaged notebook ships and shows errors as a plain line."""
import json
import socket
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
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
    assert "app_from_env()" in code and "error_panel(e)" in code  # errors: a plain line, no traceback


def test_dry_run_passes_settings_to_the_guarded_server(tmp_path, capsys):
    assert main(["serve", "--data", "digits", "--store", str(tmp_path / "l.db"), "--port", "9123",
                 "--no-browser", "--annotator", "ada", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DCAI_DATA=digits" in out and f"DCAI_STORE={tmp_path / 'l.db'}" in out and "DCAI_ANNOTATOR=ada" in out
    assert "-m dcai_widgets.serve" in out and "--port=9123" in out and "--no-browser" in out
    assert str(app_notebook()) in out
    assert "--show_tracebacks=False" in out and "--Voila.port_retries=0" in out  # no traceback, no port hopping
    assert "DCAI_TEAM" not in out


def test_dry_run_of_a_team_sets_team_mode_and_registers_nobody(tmp_path, capsys):
    from dcai_widgets.store import open_store

    store = tmp_path / "t.db"
    g = tmp_path / "guide.md"
    g.write_text("# Label digits\nA 7 with a bar is still a 7.\n")
    assert main(["serve", "--store", str(store), "--annotators", "ada,bo:lead", "--guidelines", str(g),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DCAI_TEAM=1" in out and f"DCAI_GUIDELINES={g}" in out and "--no-browser" in out
    st = open_store(str(store))
    try:
        assert len(st.annotators()) == 0
    finally:
        st.close()


@pytest.mark.parametrize("args, message", [
    (["--data", "/no/such/file.npz"], "does not exist"),
    (["--store", "/no/such/dir/labels.db"], "does not exist"),
    (["--port", "70000"], "--port"),
    (["--annotator", "<b>eve</b>"], "--annotator"),
    (["--annotators", "ada,<b>eve</b>"], "not allowed"),
    (["--annotators", "ada,ada"], "twice"),
    (["--annotators", "ada:boss"], "unknown role"),
    (["--annotators", "ada", "--annotator", "bo"], "single-user"),
    (["--max-kernels", "0"], "--max-kernels"),
    (["--max-pages-per-person", "-1"], "--max-pages-per-person"),
    (["--kernel-timeout", "1"], "--kernel-timeout"),
    (["--guidelines", "/no/such/guide.md"], "--guidelines"),
    (["--allow-host", "<evil>"], "--allow-host"),
    (["--ip", "0.0.0.0"], "--insecure"),
    (["--annotators", "ada", "--overlap", "lots"], "--overlap"),
    (["--annotators", "ada", "--overlap", "1.5"], "--overlap"),
    (["--overlap", "0.2"], "team mode"),
])
def test_bad_options_exit_2_with_a_message(args, message, capsys, tmp_path):
    assert main(["serve", "--store", str(tmp_path / "s.db"), *args, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_store_that_is_a_folder_is_refused(tmp_path, capsys):
    assert main(["serve", "--store", str(tmp_path), "--dry-run"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_team_file_is_read_and_checked(tmp_path, capsys):
    ok = tmp_path / "team.toml"
    ok.write_text('[annotators]\nada = "lead"\nbo = "annotator"\n')
    assert main(["serve", "--store", str(tmp_path / "s.db"), "--team", str(ok), "--dry-run"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[annotators]\nada = "boss"\n')
    assert main(["serve", "--store", str(tmp_path / "s.db"), "--team", str(bad), "--dry-run"]) == 2
    assert "unknown role" in capsys.readouterr().err
    bad.write_text("ada = lead\n")
    assert main(["serve", "--store", str(tmp_path / "s.db"), "--team", str(bad), "--dry-run"]) == 2
    assert "TOML" in capsys.readouterr().err


def test_bad_data_and_stores_are_refused_before_serving(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["serve", "--data", str(text), "--store", str(tmp_path / "a.db"), "--dry-run"]) == 2
    assert "don't know how to open" in capsys.readouterr().err
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    assert main(["serve", "--store", str(garbage), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "could not open" in err and "garbage.db" in err
    # a store made for the digits, then served with other data
    other = tmp_path / "other.npz"
    rng = np.random.default_rng(0)
    np.savez(other, X=rng.normal(size=(30, 4)).astype("float32"), y=np.arange(30) % 3)
    digits_store = tmp_path / "digits.db"
    import dcai_widgets as dw

    dw.Session.demo(store=digits_store).store.close()   # (a dry run leaves no store behind)
    assert main(["serve", "--data", str(other), "--store", str(digits_store), "--dry-run"]) == 2
    assert "could not open" in capsys.readouterr().err


def test_busy_port_fails_fast_and_names_the_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        t0 = time.time()
        r = subprocess.run([sys.executable, "-m", "dcai_widgets.cli", "serve", "--store", str(tmp_path / "x.db"),
                            "--port", str(port), "--no-browser"], check=False, capture_output=True, text=True, timeout=120)
        took = time.time() - t0
    assert r.returncode == 2, r.stderr
    assert f"port {port}" in r.stderr and "already in use" in r.stderr
    assert "serving" not in r.stdout + r.stderr and took < 60


def test_bad_store_exits_before_listening(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00not sqlite" * 500)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "dcai_widgets.cli", "serve", "--store", str(garbage),
                        "--port", str(port), "--no-browser"], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "could not open" in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as s:  # nothing is listening there
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_revoke_command(tmp_path, capsys):
    from dcai_widgets.serve.identity import Member, issue_links, load_key
    from dcai_widgets.store import open_store

    store = tmp_path / "t.db"
    st = open_store(str(store))
    issue_links(st, load_key(str(store) + ".key"), [Member("ada"), Member("bo")])
    st.close()
    assert main(["revoke", "bo", "--store", str(store)]) == 0
    assert "revoked bo" in capsys.readouterr().out
    st = open_store(str(store))
    try:
        df = st.annotators().set_index("name")
        assert bool(df.loc["bo", "revoked"]) and not bool(df.loc["ada", "revoked"])
    finally:
        st.close()
    assert main(["revoke", "zed", "--store", str(store)]) == 2
    assert "zed" in capsys.readouterr().err


def test_backup_command_copies_the_labels(tmp_path, capsys):
    from dcai_widgets.store import open_store

    src, dest = tmp_path / "src.db", tmp_path / "copy.db"
    st = open_store(str(src))
    st.append([1, 2], ["a", "b"], source="human", annotator="ada")
    st.close()
    assert main(["backup", str(src), str(dest)]) == 0
    copy = open_store(str(dest))
    try:
        assert len(copy.current(("human",))) == 2
    finally:
        copy.close()
    assert main(["backup", str(src), str(dest)]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_module_entry_runs_without_a_shell_script(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dcai_widgets.cli", "serve", "--store", str(tmp_path / "x.db"),
                        "--dry-run"], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "dcai_widgets.serve" in r.stdout


def test_team_links_on_a_postgresql_store(pg_server, tmp_path, capsys):
    from dcai_widgets.cli import team_links
    from dcai_widgets.serve.identity import Member

    url = pg_server.new_database()
    assert main(["serve", "--store", url, "--annotators", "ada", "--dry-run"]) == 0  # data + store checked
    assert "DCAI_TEAM=1" in capsys.readouterr().out
    key = tmp_path / "pg.key"
    first = team_links(url, [Member("ada"), Member("lee", "lead")], [], str(key))
    assert [x.name for x in first] == ["ada", "lee"] and (key.stat().st_mode & 0o777) == 0o600
    assert [x.token for x in team_links(url, None, [], str(key))] == [x.token for x in first]  # restart
    assert main(["revoke", "ada", "--store", url]) == 0
    assert [x.name for x in team_links(url, None, [], str(key))] == ["lee"]


@pytest.mark.parametrize("given, env", [("0.25", "0.25"), ("2", "2"), ("3.0", "3")])
def test_overlap_reaches_the_kernels_as_the_team_panel_reads_it(tmp_path, capsys, given, env):
    from dcai_widgets.widgets.team import overlap_from_env

    assert main(["serve", "--store", str(tmp_path / "s.db"), "--annotators", "ada,bo", "--overlap", given,
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"DCAI_TEAM_OVERLAP={env}" in out
    assert overlap_from_env({"DCAI_TEAM_OVERLAP": env}) == float(given)


def test_a_dry_run_leaves_no_store_behind_and_says_what_resizing_did(tmp_path, capsys):
    """The walk: `serve --dry-run` with one folder created the store bound to it, so the real run with
    the intended data was refused ("belongs to another dataset"); and a folder of mixed image sizes was
    resized without a word in the terminal."""
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for k, size in enumerate([(16, 16), (16, 16), (30, 20)]):
            Image.new("L", size, 40 * k).save(tmp_path / "imgs" / c / f"{k}.png")
    store = tmp_path / "l.db"
    assert main(["serve", "--data", str(tmp_path / "imgs"), "--store", str(store), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert not list(tmp_path.glob("l.db*")), "a dry run must not create the store"
    assert "2 of 6 images" in err and "resized to 16x16" in err
    assert main(["serve", "--data", "digits", "--store", str(store), "--dry-run"]) == 0   # not refused


def test_image_size_reaches_the_app_and_is_checked(tmp_path, capsys):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.new("L", (16, 16), 10).save(tmp_path / "imgs" / c / "0.png")
    Image.new("L", (30, 20), 90).save(tmp_path / "imgs" / "a" / "1.png")
    args = ["serve", "--data", str(tmp_path / "imgs"), "--store", str(tmp_path / "l.db"), "--dry-run"]
    assert main(args + ["--image-size", "40"]) == 0
    out = capsys.readouterr()
    assert "DCAI_IMAGE_SIZE=40" in out.out and "3 of 3 images" in out.err and "to 40x40" in out.err
    assert main(args + ["--image-size", "2"]) == 2 and "--image-size" in capsys.readouterr().err
    csv = tmp_path / "t.csv"
    csv.write_text("label,x\n1,0.5\n2,0.1\n")
    assert main(["serve", "--data", str(csv), "--store", str(tmp_path / "m.db"), "--dry-run",
                 "--image-size", "40"]) == 2
    assert "image_size applies to a folder" in capsys.readouterr().err
