"""dcai_widgets.serve without a server: secret links (stable, revocable, key file private), the Host/Origin
rules, the kernel app's identity from the token (not from ?annotator=), the plain error line."""
import os

import pytest

from dcai_widgets.serve.guard import Policy, split_host
from dcai_widgets.serve.identity import (
    Member,
    issue_links,
    live_links,
    load_key,
    load_team,
    parse_annotators,
    revoke,
    token_hash,
)
from dcai_widgets.serve.page import error_message, error_panel
from dcai_widgets.store import open_store


@pytest.fixture
def store(tmp_path):
    st = open_store(str(tmp_path / "t.db"))
    yield st
    st.close()


def test_links_are_stable_revocable_and_stored_hashed(store, tmp_path):
    key = load_key(tmp_path / "t.db.key")
    first = {x.name: x for x in issue_links(store, key, [Member("ada"), Member("bo", "lead")])}
    again = {x.name: x for x in issue_links(store, key, [Member("ada"), Member("bo", "lead")])}
    assert {n: x.token for n, x in first.items()} == {n: x.token for n, x in again.items()}  # restart: same links
    assert first["ada"].token != first["bo"].token and len(first["ada"].token) >= 40
    reg = store.annotators().set_index("name")
    assert reg.loc["ada", "token_hash"] == token_hash(first["ada"].token)
    assert first["ada"].token not in set(reg["token_hash"])  # only the hash is stored
    assert store.annotator_for_token_hash(token_hash(first["bo"].token)) == ("bo", "lead")
    assert {x.name for x in live_links(store, key)} == {"ada", "bo"}

    assert revoke(store, "ada") and not revoke(store, "nobody")
    assert store.annotator_for_token_hash(token_hash(first["ada"].token)) is None
    assert {x.name for x in live_links(store, key)} == {"bo"}
    back = issue_links(store, key, [Member("ada")])[0]  # re-added: a new link; the old one stays dead
    assert back.token != first["ada"].token
    assert store.annotator_for_token_hash(token_hash(back.token)) == ("ada", "annotator")
    assert store.annotator_for_token_hash(token_hash(first["ada"].token)) is None
    assert issue_links(store, key, [Member("ada")])[0].token == back.token


def test_key_file_is_private_and_checked(tmp_path):
    p = tmp_path / "k.key"
    key = load_key(p)
    assert len(key) == 32 and (os.stat(p).st_mode & 0o777) == 0o600
    assert load_key(p) == key
    os.chmod(p, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_key(p)
    os.chmod(p, 0o600)
    p.write_text("short")
    with pytest.raises(ValueError, match="damaged"):
        load_key(p)
    with pytest.raises(ValueError, match="does not exist"):
        load_key(tmp_path / "none.key", create=False)


def test_team_specs(tmp_path):
    assert parse_annotators("ada, bo:lead ,") == [Member("ada"), Member("bo", "lead")]
    for bad, msg in [("<b>x</b>", "not allowed"), ("a,a", "twice"), ("", "nobody"), ("a:root", "unknown role")]:
        with pytest.raises(ValueError, match=msg):
            parse_annotators(bad)
    f = tmp_path / "team.toml"
    f.write_text('[annotators]\nada = "lead"\n"Bo B." = "annotator"\n')
    assert load_team(f) == [Member("ada", "lead"), Member("Bo B.", "annotator")]
    f.write_text('[people]\nada = "lead"\n')
    with pytest.raises(ValueError, match=r"\[annotators\]"):
        load_team(f)


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8866", True), ("localhost:8866", True), ("[::1]:8866", True), ("LOCALHOST", True),
    ("evil.example", False), ("evil.example:8866", False), ("127.0.0.1.evil.example", False),
    ("localhost.evil.example", False), ("10.0.0.5:8866", False), ("", False), ("labs.example.org", True),
])
def test_host_rule_on_loopback(host, ok):
    p = Policy(bind_ip="127.0.0.1", allow_hosts=("labs.example.org",))
    assert p.host_allowed(host) is ok


def test_host_and_origin_rules_on_other_binds():
    lan = Policy(bind_ip="10.0.0.5")
    assert lan.host_allowed("10.0.0.5:8866") and not lan.host_allowed("10.0.0.6:8866")
    assert not lan.host_allowed("evil.example")
    anyip = Policy(bind_ip="0.0.0.0")
    assert anyip.host_allowed("10.0.0.6:8866") and not anyip.host_allowed("evil.example")  # IP literals only
    p = Policy()
    assert p.origin_allowed("http://127.0.0.1:8866") and p.origin_allowed("https://localhost")
    for bad in ("null", "http://evil.example", "file://", "javascript:alert(1)", "http://127.0.0.1@evil.example"):
        assert not p.origin_allowed(bad), bad
    assert split_host("[::1]:80") == "::1" and split_host("Example.ORG.:1") == "example.org"
    with pytest.raises(ValueError, match="registry"):
        Policy(team=True)


def test_policy_identity_is_cached_briefly_but_fresh_on_demand():
    calls = []
    reg = {token_hash("t"): ("ada", "annotator")}

    def resolve(h):
        calls.append(h)
        return reg.get(h)

    p = Policy(team=True, resolve=resolve, cache_s=60)
    assert p.identity("t") == ("ada", "annotator") and p.identity("t") == ("ada", "annotator")
    assert len(calls) == 1
    reg.clear()  # revoked
    assert p.identity("t") == ("ada", "annotator")  # static files may ride the cache
    assert p.identity("t", fresh=True) is None  # pages, sockets and writes never do
    assert p.identity(None) is None and p.identity("") is None


def test_kernel_app_takes_the_annotator_from_the_token_not_the_query(tmp_path):
    from dcai_widgets.widgets.app import app_from_env

    path = tmp_path / "t.db"
    st = open_store(str(path))
    ada = issue_links(st, load_key(str(path) + ".key"), [Member("ada"), Member("lee", "lead")])
    st.close()
    env = {"DCAI_DATA": "digits", "DCAI_STORE": str(path), "DCAI_TEAM": "1", "DCAI_ANNOTATOR": "mallory",
           "QUERY_STRING": f"annotator=mallory&token={ada[0].token}"}
    app = app_from_env(env)
    try:
        assert app.annotator == "ada" and app.label_panel.annotator == "ada" and app.role == "annotator"
    finally:
        app.session.store.close()
    for q in ("annotator=mallory", "token=forged", ""):
        with pytest.raises(PermissionError, match="personal link"):
            app_from_env({**env, "QUERY_STRING": q})


def test_error_line_is_escaped_and_plain():
    e = ValueError("store <script>alert(1)</script> is damaged")
    panel = error_panel(e)
    assert "<script>" not in panel.value and "&lt;script&gt;" in panel.value
    assert "Traceback" not in panel.value
    assert "server's log" in error_message(ZeroDivisionError("secret detail"))
    assert "secret detail" not in error_message(ZeroDivisionError("secret detail"))


def test_key_path_beside_a_file_and_private_for_a_url(tmp_path):
    from dcai_widgets.serve.identity import default_key_path

    assert default_key_path(str(tmp_path / "labels.db")) == tmp_path / "labels.db.key"
    a = default_key_path("postgresql://ada:secret1@db.example:5432/labels")
    b = default_key_path("postgresql://ada:other@db.example:5432/labels")
    c = default_key_path("postgresql://ada@db.example:5432/other")
    assert a == b != c  # the password is not part of the name; the database is
    assert "secret1" not in str(a) and a.parent.name == "keys"


def test_kernel_manager_bounds_pages_and_reclaims_closed_ones_first():
    import asyncio

    from dcai_widgets.serve.kernels import BoundedKernelManager, owner_of

    km = BoundedKernelManager(max_kernels=2, reclaim_grace_s=0.0, unconnected_grace_s=1000)
    shut = []

    async def fake_shutdown(kid, why):  # no real kernels here: drop the entry as a shutdown would
        shut.append((kid, why))
        km._kernels.pop(kid)
        km._kernel_connections.pop(kid, None)
        km.ended[why] += 1

    km._shutdown_quietly = fake_shutdown
    for kid in ("open", "closed"):
        km._kernels[kid] = object()
        km._kernel_connections[kid] = 0
        km._started[kid] = 0.0
        km.notify_connect(kid)
    km.notify_disconnect("closed")
    assert km.reclaimable() == ["closed"]  # the open page's kernel is never taken
    assert asyncio.run(km.admit(wait_s=0.5)) is True  # full: the closed page's kernel makes room
    assert shut == [("closed", "reclaimed")] and km.pending == 1
    assert asyncio.run(km.admit(wait_s=0.3)) is False  # one open page + one page starting = the limit
    km.release()
    assert km.pending == 0 and km.running() == 1
    km.notify_disconnect("open")
    km.cull_idle_timeout = 0
    assert asyncio.run(km.sweep()) == 1 and km.ended["culled"] == 1
    assert owner_of({"QUERY_STRING": "annotator=x&token=abc"}) == token_hash("abc")
    assert owner_of({"QUERY_STRING": "annotator=x"}) is None and owner_of(None) is None


def test_one_person_cannot_hold_every_kernel_slot():
    """An insider reloading or opening tabs with their own valid link filled all --max-kernels slots,
    locking colleagues out; a link now holds at most `max_per_person` kernels, their closed pages first."""
    import asyncio

    from dcai_widgets.serve.kernels import BoundedKernelManager

    km = BoundedKernelManager(max_kernels=8, reclaim_grace_s=0.0, unconnected_grace_s=1000)
    km.max_per_person = 2
    shut = []

    async def fake_shutdown(kid, why):
        shut.append(kid)
        km._kernels.pop(kid)
        km._kernel_connections.pop(kid, None)

    km._shutdown_quietly = fake_shutdown
    for kid, owner in (("a1", "A"), ("a2", "A"), ("b1", "B")):
        km._kernels[kid] = object()
        km._kernel_connections[kid] = 0
        km._owners[kid] = owner
        km.notify_connect(kid)
    assert km.owned("A") == 2 and km.owned("B") == 1
    assert asyncio.run(km.admit_person("A", wait_s=0.3)) is False and shut == []  # two open pages: refused
    assert asyncio.run(km.admit_person("B")) is True                    # colleagues are not affected
    assert asyncio.run(km.admit_person(None)) is True                   # single-user mode: no owner
    km.notify_disconnect("a1")                                          # A closes a tab
    assert asyncio.run(km.admit_person("A")) is True and shut == ["a1"]
    km.max_per_person = 0
    assert asyncio.run(km.admit_person("B")) is True                    # 0: no limit
