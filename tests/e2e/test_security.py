"""End to end against a real team server (`dcai-widgets serve --annotators ...`): strangers, spoofed
Host/Origin (the DNS-rebinding path), missing/wrong/revoked tokens and other annotators' tokens are
refused with 403 for pages, APIs and kernel websockets; the token, not `?annotator=`, decides who labels;
kernels are bounded and closed pages' kernels go.

One server for the module (each start costs seconds); max 3 kernels, closed pages' kernels culled
after 8 s idle."""
from __future__ import annotations

import re
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest

from .harness import PANEL_ID, TeamServer, cli, human_labels, kernels, launch, press_and_wait, shown

pytestmark = pytest.mark.timeout(600)
MAX_KERNELS = 3
V1 = "v1.kernel.websocket.jupyter.org"


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("team")
    server = TeamServer(tmp / "labels.db", tmp / "serve.log", annotators="ada,bo,cy:lead",
                        extra=["--max-kernels", str(MAX_KERNELS), "--kernel-timeout", "8"])
    server.store = tmp / "labels.db"
    server.log_path = tmp / "serve.log"
    assert set(server.links) == {"ada", "bo", "cy"}, server.links
    yield server
    server.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def get(url, **headers):
    import requests

    return requests.get(url, headers=headers, timeout=60)


def ws_status(team, kernel_id, token=None, origin="same", host=None, protocol=V1):
    """HTTP status of a kernel websocket handshake (101 when it opens); `protocol` is the subprotocol
    asked for (the app's page asks for v1; None: websocket-client's default, the legacy protocol)."""
    import websocket

    port = team.port
    q = f"?token={token}" if token else ""
    kw = {"subprotocols": [protocol]} if protocol else {}
    if origin == "same":
        kw["origin"] = f"http://127.0.0.1:{port}"
    elif origin:
        kw["origin"] = origin
    if host:
        kw["host"] = host
    try:
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels{q}",
                                         timeout=20, **kw)
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    ws.close()
    return 101


def wait_for(cond, timeout_s, step=0.5):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def test_no_spoofed_host_origin_or_missing_token_gets_in(team):
    base, ada = team.url, team.token("ada")
    port = team.port
    # no token / wrong token: page, API, static file all 403
    for path in ("", "dcai/api/kernels", "voila/static/voila.js", "api/kernels"):
        assert get(base + path).status_code == 403, path
        assert get(base + path + "?token=not-a-token").status_code == 403, path
    # a valid token through a foreign Host (DNS rebinding) or from a foreign Origin: 403
    ok = base + f"dcai/api/kernels?token={ada}"
    assert get(ok).status_code == 200  # the control: the same request, honest headers
    assert get(ok, Host=f"127.0.0.1:{port}", Origin=f"http://127.0.0.1:{port}").status_code == 200
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        r = get(ok, Host=host)
        assert r.status_code == 403 and "host name" in r.text, host
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null"):
        assert get(ok, Origin=origin).status_code == 403, origin
    # the page with a valid token but a foreign Host never starts a kernel
    assert get(base + f"?token={ada}", Host="evil.example").status_code == 403
    # HTML in what a visitor sends is not reflected into the refusal
    r = get(base + "?token=<script>alert(1)</script>&annotator=<b>x</b>")
    assert r.status_code == 403 and "<script>" not in r.text and "<b>" not in r.text
    # a page-changing POST without an Origin (a form on another site would send one) is refused
    import requests

    fake = base + "voila/api/shutdown/00000000-0000-0000-0000-000000000000"
    r = requests.post(fake, cookies={f"dcai-token-{port}": ada}, timeout=30)
    assert r.status_code == 403 and "page" in r.text
    r = requests.post(fake, cookies={f"dcai-token-{port}": ada}, headers={"Origin": "http://evil.example"},
                      timeout=30)
    assert r.status_code == 403
    # the control: this server's own page (its Origin) gets past the gate to Voila (no such kernel: not 403)
    r = requests.post(fake, cookies={f"dcai-token-{port}": ada}, headers={"Origin": f"http://127.0.0.1:{port}"},
                      timeout=30)
    assert r.status_code != 403 and "Traceback" not in r.text


def test_token_decides_who_labels_websockets_and_revocation(team, browser):
    ada_ctx, bo_ctx = browser.new_context(), browser.new_context()
    try:
        page = open_app_in(ada_ctx, team.links["ada"] + "&annotator=mallory")
        assert "annotator ada" in page.inner_text(".dcai-label-panel")
        item, _ = shown(page)
        press_and_wait(page, "3")
        labels = human_labels(team.store)
        assert labels.get(item) == ("3", "ada"), "the label must carry the token's annotator, not ?annotator="
        kid = page.evaluate("() => JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")
        assert re.fullmatch(r"[0-9a-f-]{36}", kid)
        ada, bo, cy = team.token("ada"), team.token("bo"), team.token("cy")

        # the kernel websocket: only ada's token, from this server's own origin and host
        assert ws_status(team, kid, ada) == 101  # control: the page's own token gets in
        # a legacy-protocol socket made Voila misread every binary frame (server stuck, GBs of memory)
        assert ws_status(team, kid, ada, protocol=None) == 400
        assert ws_status(team, kid, ada, origin="http://evil.example") == 403
        assert ws_status(team, kid, ada, host="evil.example") == 403
        assert ws_status(team, kid, None) == 403
        assert ws_status(team, kid, "not-a-token") == 403
        assert ws_status(team, kid, bo) == 403, "another annotator's token must not reach ada's kernel"
        assert ws_status(team, kid, cy) == 403, "nor a lead's"
        assert get(team.url + f"api/kernels/{kid}?token={ada}").status_code == 200
        assert get(team.url + f"api/kernels/{kid}?token={bo}").status_code == 403

        # bo's page cannot undo ada's label: bo's Backspace has nothing of bo's to take back
        bo_page = open_app_in(bo_ctx, team.links["bo"] + "&annotator=ada")
        assert "annotator bo" in bo_page.inner_text(".dcai-label-panel")
        bo_page.keyboard.press("Backspace")
        time.sleep(2)
        assert human_labels(team.store).get(item) == ("3", "ada")

        # revoke bo: bo's open page loses its kernel, bo's link is refused from now on
        lead = team.token("cy")
        bo_kernels = {k["id"] for k in kernels(team.url, lead)["kernels"]} - {kid}
        assert bo_kernels
        r = subprocess.run(cli() + ["revoke", "bo", "--store", str(team.store)], check=False,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert get(team.links["bo"]).status_code == 403
        assert get(team.url + f"dcai/api/kernels?token={bo}").status_code == 403
        assert wait_for(lambda: not bo_kernels & {k["id"] for k in kernels(team.url, lead)["kernels"]}, 20), \
            "a revoked annotator's kernel must be shut down"
        # bo's open page says so (it used to look alive while keys did nothing); ada's page does not
        banner = bo_page.locator(".dcai-page-banner.dcai-page-revoked")
        banner.wait_for(timeout=30_000)
        assert "no longer works" in banner.inner_text()
        assert page.locator(".dcai-page-banner").count() == 0
        assert ws_status(team, kid, ada) == 101  # ada is unaffected

        # closing ada's page shuts its kernel down (the page's unload beacon, accepted without _xsrf)
        closed = kernels(team.url, lead)["ended"]["page_closed"]
        page.close(run_before_unload=True)
        assert wait_for(lambda: kid not in {k["id"] for k in kernels(team.url, lead)["kernels"]}, 5), \
            "a closed page's kernel must go"
        assert kernels(team.url, lead)["ended"]["page_closed"] == closed + 1, "the unload beacon was refused"
    finally:
        ada_ctx.close()
        bo_ctx.close()


def open_app_in(context, url):
    page = context.new_page()
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url, timeout=180_000)
    page.locator(PANEL_ID).first.wait_for(timeout=180_000)
    return page


def test_kernels_are_bounded_and_closed_pages_kernels_go(team, browser):
    lead = team.token("cy")
    assert wait_for(lambda: kernels(team.url, lead)["count"] == 0, 40), "earlier pages' kernels must go"
    seen = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(kernels(team.url, lead)["count"])
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    contexts = [browser.new_context() for _ in range(MAX_KERNELS)]
    try:
        # reload one page several times: each reload's old kernel goes, nothing piles up
        page = open_app_in(contexts[0], team.links["ada"])
        for _ in range(2):
            page.reload()
            page.locator(PANEL_ID).first.wait_for(timeout=180_000)
        assert wait_for(lambda: kernels(team.url, lead)["count"] == 1, 10)
        # fill every slot with an open page (bo's link is revoked by an earlier test): one more page load
        # gets a clear 503 — for ada, who holds the most one link may (2), and for cy, as the server is full
        pages = [page] + [open_app_in(c, team.links[n]) for c, n in zip(contexts[1:], ("ada", "cy"))]
        assert kernels(team.url, lead)["count"] == MAX_KERNELS
        r = get(team.links["ada"])
        assert r.status_code == 503 and "limit for one person" in r.text
        r = get(team.links["cy"])
        assert r.status_code == 503 and "already runs 3 pages" in r.text
        # close one page: its slot frees and the next load is served
        pages[0].close(run_before_unload=True)
        r = get(team.links["ada"])
        assert r.status_code == 200 and "kernelId" in r.text
        # that page never connected (no browser): its kernel is culled once idle
        for p in pages[1:]:
            p.close(run_before_unload=True)
        assert wait_for(lambda: kernels(team.url, lead)["count"] == 0, 45), kernels(team.url, lead)
    finally:
        stop.set()
        watcher.join(timeout=5)
        for c in contexts:
            c.close()
    assert seen and max(seen) <= MAX_KERNELS, f"kernel count went to {max(seen)}"
    assert urlsplit(team.url).hostname == "127.0.0.1"


def test_single_user_server_on_loopback_still_refuses_rebinding(tmp_path):
    """The default (127.0.0.1, no token, as `make demo`): a page from this server works without a
    token, but a DNS-rebinding page (foreign Host, foreign Origin on the kernel websocket) is refused."""
    import websocket

    from .harness import Server

    server = Server(tmp_path / "solo.db", tmp_path / "solo.log", annotator="kim")
    try:
        port = server.port
        assert get(server.url + "dcai/api/kernels").status_code == 200  # no token needed here
        assert get(server.url + "voila/static/voila.js").status_code == 200
        assert get(server.url, Host="evil.example").status_code == 403
        assert get(server.url, Host=f"evil.example:{port}").status_code == 403
        assert get(server.url + "dcai/api/kernels", Origin="http://evil.example").status_code == 403
        fake = "00000000-0000-0000-0000-000000000000"
        for kw in ({"origin": "http://evil.example"}, {"host": "evil.example"}):
            with pytest.raises(websocket.WebSocketBadStatusException) as e:
                websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{fake}/channels", timeout=20, **kw)
            assert e.value.status_code == 403, kw
        # honest headers reach the handler (404: no such kernel), so the 403s above are the gate's
        with pytest.raises(websocket.WebSocketBadStatusException) as e:
            websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{fake}/channels", timeout=20,
                                        origin=f"http://127.0.0.1:{port}", subprotocols=[V1])
        assert e.value.status_code not in (400, 403)
    finally:
        server.kill()
