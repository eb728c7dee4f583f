"""`dcai-widgets serve` up to the moment the server would start (the server itself replaced): the
`NAME URL` lines, stable across restarts of the same store, revocation, `--insecure`, the single-user
default. Real store, real key file, real port check."""
from __future__ import annotations

import os
import re
import socket

import pytest

from dcai_widgets.cli import main
from dcai_widgets.serve.identity import token_hash
from dcai_widgets.store import open_store


@pytest.fixture
def served(monkeypatch, capsys):
    """Run `main(["serve", ...])`; returns (exit code, what was printed before serving, ServeOptions, env)."""
    import dcai_widgets.serve.launcher as launcher

    calls = []

    def fake_run(options, argv):
        calls.append((options, list(argv), capsys.readouterr(), dict(os.environ)))

    monkeypatch.setattr(launcher, "run", fake_run)
    saved = dict(os.environ)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def serve(*args):
        calls.clear()
        try:
            code = main(["serve", "--port", str(port), *args])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        if not calls:
            return code, capsys.readouterr(), None, None
        options, _argv, printed, env = calls[0]
        return code, printed, options, env

    return serve


LINE = re.compile(r"^(?P<name>\S+) http://127\.0\.0\.1:\d+/\?token=(?P<token>[A-Za-z0-9_-]{43})$")


def _links(out: str) -> dict[str, str]:
    found = {m["name"]: m["token"] for m in map(LINE.match, out.splitlines()) if m}
    assert len(found) == len(out.splitlines()), f"every stdout line is `NAME URL`: {out!r}"
    return found


def test_team_links_are_printed_before_serving_and_stable_across_restarts(served, tmp_path):
    store = str(tmp_path / "labels.db")
    code, printed, options, env = served("--store", store, "--annotators", "ada,bo,cy:lead")
    assert code == 0 and options is not None and options.team and options.ip == "127.0.0.1"
    first = _links(printed.out)
    assert list(first) == ["ada", "bo", "cy"] and len(set(first.values())) == 3
    assert env["DCAI_TEAM"] == "1" and "DCAI_ANNOTATOR" not in env
    st = open_store(store)
    try:
        reg = st.annotators().set_index("name")
        assert set(reg.index) == {"ada", "bo", "cy"} and reg.loc["cy", "role"] == "lead"
        for name, tok in first.items():   # only the hash is stored
            assert reg.loc[name, "token_hash"] == token_hash(tok) and tok not in str(reg.to_dict())
    finally:
        st.close()
    # a restart of the same store, with or without the names again: the same links, still team mode
    assert _links(served("--store", store, "--annotators", "ada,bo,cy:lead")[1].out) == first
    code, printed, options, _ = served("--store", store)
    assert code == 0 and options.team and _links(printed.out) == first
    # bo revoked: bo's line is gone, bo's old token resolves to nobody; added again: a new link
    code, printed, options, _ = served("--store", store, "--revoke", "bo")
    assert code == 0 and _links(printed.out) == {k: v for k, v in first.items() if k != "bo"}
    st = open_store(store)
    try:
        assert st.annotator_for_token_hash(token_hash(first["bo"])) is None
        assert st.annotator_for_token_hash(token_hash(first["ada"])) == ("ada", "annotator")
    finally:
        st.close()
    again = _links(served("--store", store, "--annotators", "bo")[1].out)
    assert again["bo"] != first["bo"]


def test_single_user_default_and_insecure_binds(served, tmp_path):
    code, printed, options, env = served("--store", str(tmp_path / "solo.db"), "--annotator", "kim", "--no-browser")
    assert code == 0 and not options.team and options.ip == "127.0.0.1"
    assert printed.out == "" and "single user" in printed.err and "WARNING" not in printed.err
    assert env["DCAI_ANNOTATOR"] == "kim" and "DCAI_TEAM" not in env
    # another address without links: refused without --insecure, served with a warning with it
    code, printed, options, _ = served("--store", str(tmp_path / "solo.db"), "--ip", "0.0.0.0")
    assert code == 2 and options is None and "--insecure" in printed.err
    code, printed, options, _ = served("--store", str(tmp_path / "solo.db"), "--ip", "0.0.0.0", "--insecure")
    assert code == 0 and not options.team and options.ip == "0.0.0.0"
    assert "WARNING" in printed.err and "anyone who reaches port" in printed.err
    # a team on all interfaces needs no --insecure: its links are the way in
    code, printed, options, _ = served("--store", str(tmp_path / "team.db"), "--ip", "0.0.0.0", "--annotators", "ada")
    assert code == 0 and options.team and "WARNING" not in printed.err
    assert printed.out.startswith("ada http://") and "?token=" in printed.out
