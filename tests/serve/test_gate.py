"""The gate's checks on a request, without a server: what reaches a kernel websocket."""
from __future__ import annotations

import asyncio

import pytest
from tornado.httputil import HTTPHeaders

from dcai_widgets.serve.guard import KERNEL_WS_PROTOCOL, Gate, Policy, Refused
from dcai_widgets.serve.identity import token_hash

KID = "0b9e2c55-5a7e-4a53-9d8e-6f7f4c1d2e3a"


class _Request:
    def __init__(self, path: str, headers: dict, method: str = "GET") -> None:
        self.path, self.method, self.headers = path, method, HTTPHeaders(headers)


class _Handler:
    """What Gate.admit reads of a tornado handler: the request, the query, the cookie."""

    def __init__(self, path: str, headers: dict, query: dict | None = None) -> None:
        self.request = _Request(path, headers)
        self.query = query or {}
        self.sent: dict = {}
        self.path_args = ()

    def get_query_argument(self, name, default=None):
        return self.query.get(name, default)

    def get_cookie(self, name):
        return None

    def set_header(self, name, value):
        self.sent[name] = value

    def set_cookie(self, *a, **kw):
        pass


def _ws(port: int = 8866, protocols: str | None = KERNEL_WS_PROTOCOL, **extra) -> dict:
    h = {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}", "Upgrade": "websocket",
         "Connection": "Upgrade", **extra}
    if protocols is not None:
        h["Sec-WebSocket-Protocol"] = protocols
    return h


def _admit(gate: Gate, handler: _Handler) -> int:
    try:
        asyncio.run(gate.admit(handler))
    except Refused as e:
        return e.status_code
    return 200


@pytest.mark.parametrize("team", [False, True])
def test_kernel_websocket_must_speak_the_v1_protocol(team):
    """Voila's websocket handler reads every binary frame it sends as the v1 protocol; a client that
    asked for the legacy protocol (no Sec-WebSocket-Protocol, as websocket-client sends by default) got
    legacy frames misread as a huge offset count: the server's loop stuck and its memory grew by GBs
    (seen: 7.3 GB in two minutes). Such a socket is refused before it reaches the kernel."""
    reg = {token_hash("ada-token"): ("ada", "annotator")}
    gate = Gate(Policy(team=team, resolve=reg.get if team else None))
    q = {"token": "ada-token"} if team else {}
    path = f"/api/kernels/{KID}/channels"
    assert _admit(gate, _Handler(path, _ws(), q)) == 200      # the page's own socket (asks for v1)
    assert _admit(gate, _Handler(path, _ws(protocols=f"other, {KERNEL_WS_PROTOCOL}"), q)) == 200
    assert _admit(gate, _Handler(path, _ws(protocols=None), q)) == 400
    assert _admit(gate, _Handler(path, _ws(protocols="kernel.v0"), q)) == 400
    if team:   # no token: still the 403 of a stranger, whatever the protocol
        assert _admit(gate, _Handler(path, _ws(protocols=None), {})) == 403
    # a plain API call on the same kernel is no websocket: unaffected
    assert _admit(gate, _Handler(f"/api/kernels/{KID}", {"Host": "127.0.0.1:8866"}, q)) == 200


class _PageHandler(_Handler):
    def __init__(self, path: str, headers: dict, query: dict | None = None, cookie: str | None = None,
                 raw_query: str = "") -> None:
        super().__init__(path, headers, query)
        self.request.query = raw_query
        self.cookie, self.redirected, self.cookies_set = cookie, None, []

    def get_cookie(self, name):
        return self.cookie

    def set_cookie(self, name, value, **kw):
        self.cookies_set.append((name, value, kw))

    def redirect(self, url):
        self.redirected = url


def test_a_page_asked_for_with_the_cookie_alone_goes_to_its_link():
    """The kernel learns who labels from the page's query string only: a bookmark of the bare address
    (the cookie, no ?token=) used to start a kernel, owned by nobody, that said "needs your personal
    link". Now such a page load is redirected to the same path with the cookie's token, before any
    kernel slot is taken; an unknown or revoked cookie is still a 403."""
    reg = {token_hash("ada-token"): ("ada", "annotator")}
    gate = Gate(Policy(team=True, resolve=reg.get))
    gate.is_page = lambda h: True   # a GET of the app page (VoilaHandler) without path arguments
    host = {"Host": "127.0.0.1:8866"}
    h = _PageHandler("/", host, cookie="ada-token")
    assert _admit(gate, h) == 200 and h.redirected == "/?token=ada-token"
    assert h.dcai_identity == ("ada", "annotator") and not getattr(h, "_dcai_slot", False)
    h = _PageHandler("/", host, cookie="ada-token", raw_query="annotator=x")
    assert _admit(gate, h) == 200 and h.redirected == "/?annotator=x&token=ada-token"
    h = _PageHandler("/", host, query={"token": "ada-token"}, raw_query="token=ada-token")
    assert _admit(gate, h) == 200 and h.redirected is None   # the link itself: served, cookie set
    assert [c[:2] for c in h.cookies_set] == [("dcai-token", "ada-token")]
    assert h.cookies_set[0][2]["httponly"] and h.cookies_set[0][2]["samesite"] == "Strict"
    assert _admit(gate, _PageHandler("/", host, cookie="revoked-token")) == 403


def test_warning_lines_do_not_write_the_secret_link_into_the_log():
    """A refused static file logged "403 GET /voila/files/app.ipynb?token=W1gq…: File not allowlisted"
    (tornado's request summary, which Jupyter's access-log scrubbing does not cover)."""
    from unittest import mock

    from tornado import web
    from tornado.httputil import HTTPServerRequest, RequestStartLine

    from dcai_widgets.serve.guard import GateMixin, scrub_token

    class Handler(GateMixin, web.RequestHandler):
        pass

    uri = "/voila/files/app.ipynb?a=1&token=W1gqSECRET&x=token"
    req = HTTPServerRequest(start_line=RequestStartLine("GET", uri, "HTTP/1.1"), connection=mock.Mock(),
                            headers=HTTPHeaders({"Host": "127.0.0.1:8866"}))
    summary = Handler(web.Application(), req)._request_summary()
    assert "W1gqSECRET" not in summary and "token=[secret]" in summary and "a=1" in summary
    assert scrub_token("/?token=abc") == "/?token=[secret]" and scrub_token("/?mytoken=abc") == "/?mytoken=abc"
    assert scrub_token("/?TOKEN=abc;token=def") == "/?TOKEN=[secret];token=[secret]"
