"""The door of the served app: every request's Host, Origin and token are checked before Voila sees it.

Why not Voila's own settings: Voila sets `allow_remote_access=True` (no Host check at all), Jupyter
Server's Host check refuses every non-loopback IP (so a server bound to a LAN address could not be
reached by that address), its static-file handlers are not Jupyter handlers (no auth), and its
IdentityProvider skips the Origin check for token-authenticated requests. A DNS-rebinding page
(`evil.example` resolving to 127.0.0.1) sends `Host: evil.example` and `Origin: http://evil.example`;
both are refused here, for every handler, whatever the token.

Rules (see `Policy`):
- Host: a loopback address, `localhost`, the bound address, names given with `--allow-host`; when bound
  to all interfaces (0.0.0.0 / ::) also this machine's host names and any IP literal (an IP in the Host
  header means the browser was pointed at that address itself: not a rebinding).
- Origin, when sent (browsers send it on websockets and POSTs): its host must pass the same rule.
  Unsafe methods (POST, PUT, PATCH, DELETE) from a browser must send an allowed Origin, or carry the
  token in an `Authorization: token ...` header (which a foreign page cannot set without CORS, and
  no CORS is offered). That is what replaces Jupyter's `_xsrf` check, so Voila's page-close
  `sendBeacon` shutdown (which has no `_xsrf`) now works.
- Token (team mode): `?token=`, `Authorization: token ...` or the HttpOnly SameSite=Strict cookie set
  when a page is opened with a valid link (a page asked for with the cookie alone is redirected to its
  link: the kernel reads the token from the page's query). Unknown or revoked -> 403. A kernel belongs
  to the token that opened its page: another token cannot connect to it, read it or shut it down.
- Kernel websockets must ask for the v1 protocol (Voila misreads legacy-protocol frames).
"""
from __future__ import annotations

import html
import ipaddress
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from tornado import web

from .identity import token_hash

WILDCARDS = ("0.0.0.0", "::", "")
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KERNEL_WS_PROTOCOL = "v1.kernel.websocket.jupyter.org"
_CHANNELS_PATH = re.compile(r"/api/kernels/[^/]+/channels/?$")
_KERNEL_PATH = re.compile(r"/(?:api/kernels|voila/api/shutdown|voila/execution|voila/query)/"
                          r"(?P<kid>[\w]+-[\w]+-[\w]+-[\w]+-[\w]+)")


def split_host(host: str) -> str:
    """The host name of a Host header or netloc, without port or IPv6 brackets, lower case."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_ip(host: str) -> ipaddress._BaseAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def machine_names() -> set[str]:
    names = {socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return {n for n in names if n}


@dataclass
class Policy:
    """Who may come in. `resolve(token_hash) -> (name, role) | None` is the store's registry lookup;
    `team=False` is the single-user mode (no token asked, Host/Origin still checked)."""

    bind_ip: str = "127.0.0.1"
    allow_hosts: tuple[str, ...] = ()
    team: bool = False
    resolve: Callable[[str], tuple[str, str] | None] | None = None
    cookie: str = "dcai-token"
    cache_s: float = 2.0
    _names: frozenset[str] = field(init=False, repr=False)
    _cache: dict[str, tuple[float, Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        names = set(LOCAL_NAMES) | {split_host(h) for h in self.allow_hosts if h}
        if self.bind_ip not in WILDCARDS:
            names.add(split_host(self.bind_ip))
        else:
            names |= machine_names()
        self._names = frozenset(names)
        if self.team and self.resolve is None:
            raise ValueError("team mode needs a registry to resolve tokens")

    @property
    def wildcard(self) -> bool:
        return self.bind_ip in WILDCARDS

    def host_allowed(self, host: str) -> bool:
        h = split_host(host)
        if not h:
            return False
        ip = _is_ip(h)
        if ip is not None:
            return ip.is_loopback or self.wildcard or h in self._names
        return h in self._names

    def origin_allowed(self, origin: str) -> bool:
        try:
            u = urlsplit(origin)
        except ValueError:
            return False
        return u.scheme in ("http", "https") and bool(u.netloc) and self.host_allowed(u.netloc)

    def identity(self, token: str | None, fresh: bool = False) -> tuple[str, str] | None:
        """(name, role) of a live token; cached `cache_s` seconds unless `fresh` (page loads, sockets)."""
        if not token or self.resolve is None:
            return None
        h = token_hash(token)
        now = time.monotonic()
        hit = self._cache.get(h)
        if not fresh and hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        who = self.resolve(h)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[h] = (now, who)
        return who


class Refused(web.HTTPError):
    """A refusal whose reason is shown to the visitor as plain text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, reason=None)
        self.message = message


def _request_token(handler: web.RequestHandler, policy: Policy) -> tuple[str | None, str]:
    """(token, where it came from: "query" | "header" | "cookie" | "")."""
    t = handler.get_query_argument("token", None)
    if t:
        return t, "query"
    auth = handler.request.headers.get("Authorization", "")
    if auth[:6].lower() == "token ":
        return auth[6:].strip(), "header"
    c = handler.get_cookie(policy.cookie)
    return (c, "cookie") if c else (None, "")


_TOKEN_PARAM = re.compile(r"(?i)((?:^|[?&;])token=)[^&;#]*")


def scrub_token(uri: str) -> str:
    """`uri` with the value of every `token=` query parameter replaced by `[secret]`."""
    return _TOKEN_PARAM.sub(r"\1[secret]", uri or "")


def _subprotocols(req: Any) -> list[str]:
    return [p.strip() for p in req.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]


class GateMixin:
    """Put before a Voila/Jupyter/tornado handler class: checks run in `prepare` before the handler's own.
    Errors are written as a short plain message, never a traceback."""

    dcai_identity: tuple[str, str] | None = None
    dcai_token: str | None = None
    _dcai_slot = False

    async def prepare(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        gate = self.settings.get("dcai_gate")
        if gate is not None:
            await gate.admit(self)
            if self._finished:  # type: ignore[attr-defined]  # answered by the gate (a redirect)
                return
        r = super().prepare(*args, **kw)  # type: ignore[misc]
        if r is not None and hasattr(r, "__await__"):
            await r

    def on_finish(self) -> None:
        gate = self.settings.get("dcai_gate")
        if gate is not None:
            gate.finished(self)
        super().on_finish()  # type: ignore[misc]

    def _request_summary(self) -> str:
        """Tornado's summary for its warning lines ("403 GET /x?token=…: File not allowlisted") wrote
        the secret link into the server's log; Jupyter scrubs only its access log."""
        req = self.request  # type: ignore[attr-defined]
        return f"{req.method} {scrub_token(req.uri)} ({req.remote_ip})"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Refused):
            message = exc.message
        elif status_code >= 500:
            message = "The server met an error; the details are in the server's log."
        else:
            message = getattr(exc, "log_message", None) or self._reason  # type: ignore[attr-defined]
            if isinstance(exc, web.HTTPError) and exc.log_message and exc.args:
                try:
                    message = exc.log_message % exc.args
                except TypeError:
                    pass
        path = self.request.path  # type: ignore[attr-defined]
        if "/api/" in path:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": message, "status": status_code}))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(f"<!doctype html><title>{status_code}</title><h1>{status_code} "
                    f"{html.escape(self._reason)}</h1><p>{html.escape(str(message))}</p>")  # type: ignore[attr-defined]


class Gate:
    """The checks `GateMixin` runs, with the kernel admission for page loads."""

    def __init__(self, policy: Policy, kernels: Any = None, page_wait_s: float = 8.0) -> None:
        self.policy = policy
        self.kernels = kernels
        self.page_wait_s = page_wait_s

    def is_page(self, handler: Any) -> bool:
        from voila.handler import VoilaHandler

        return isinstance(handler, VoilaHandler) and handler.request.method == "GET" and not any(handler.path_args)

    async def admit(self, handler: Any) -> None:
        p, req = self.policy, handler.request
        host = req.headers.get("Host", "")
        if not p.host_allowed(host):
            raise Refused(403, "This server is not reachable under that host name. Open the link the "
                               "server printed, or start it with --allow-host NAME.")
        origin = req.headers.get("Origin")
        if origin is not None and not p.origin_allowed(origin):
            raise Refused(403, "Requests from other web sites are refused.")
        token, where = _request_token(handler, p)
        websocket = req.headers.get("Upgrade", "").lower() == "websocket"
        if not websocket:  # a link's token never leaves in a Referer to another site
            handler.set_header("Referrer-Policy", "same-origin")
        if req.method in UNSAFE and origin is None and where != "header" and p.team:
            raise Refused(403, "A browser request that changes something must come from this app's page.")
        page = self.is_page(handler)
        if p.team:
            who = p.identity(token, fresh=page or websocket or req.method in UNSAFE)
            if who is None:
                raise Refused(403, "This page needs your personal link (the one `dcai-widgets serve` "
                                   "printed for you); the link is missing, wrong or revoked.")
            handler.dcai_identity, handler.dcai_token = who, token
            if page and where == "query":
                handler.set_cookie(p.cookie, token, path="/", httponly=True, samesite="Strict")
            elif page and where == "cookie":
                # a bookmark of the bare address: the kernel learns who labels from the page's query
                # string only, so without this it started a kernel that said "needs your personal link"
                # (and that no token owned); the page is sent to its own link instead
                query = "&".join(q for q in (req.query, "token=" + quote(token, safe="")) if q)
                handler.redirect(f"{req.path}?{query}")
                return
            m = _KERNEL_PATH.search(req.path)
            if m and self.kernels is not None:
                owner = self.kernels.owner(m.group("kid"))
                if owner is not None and owner != token_hash(token):
                    raise Refused(403, "This kernel belongs to another page.")
        if websocket and _CHANNELS_PATH.search(req.path) and KERNEL_WS_PROTOCOL not in _subprotocols(req):
            # Voila reads every outgoing binary frame as the v1 protocol; a legacy-protocol socket made
            # it loop over a garbage offset count (server stuck, memory growing by GBs): the app's page
            # always asks for v1, so nothing else is let in
            raise Refused(400, f"This server's kernels speak only the {KERNEL_WS_PROTOCOL} websocket protocol.")
        if page and self.kernels is not None:
            token = getattr(handler, "dcai_token", None)
            if token and not await self.kernels.admit_person(token_hash(token), self.page_wait_s):
                raise Refused(503, f"You already have {self.kernels.max_per_person} pages of this app open, the "
                                   "limit for one person. Close one of your tabs of this app and reload.")
            if not await self.kernels.admit(self.page_wait_s):
                raise Refused(503, f"The server already runs {self.kernels.max_kernels} pages of this app, "
                                   "its limit. Close a tab of this app you no longer use, or wait a "
                                   "minute and reload.")
            handler._dcai_slot = True
            from .kernels import current_page

            current_page.set(handler)  # start_kernel, later in this request's task, takes the slot

    def finished(self, handler: Any) -> None:
        """After a response: free a page's unused kernel slot; count a page-close shutdown that worked."""
        if self.kernels is None:
            return
        if handler._dcai_slot:
            handler._dcai_slot = False
            self.kernels.release()
        req = handler.request
        if req.method == "POST" and "/voila/api/shutdown/" in req.path and handler.get_status() == 204:
            self.kernels.page_closed()


_gated: dict[type, type] = {}


def gated(cls: type) -> type:
    """`cls` with `GateMixin` in front (one subclass per class)."""
    if cls not in _gated:
        _gated[cls] = type(f"Gated{cls.__name__}", (GateMixin, cls), {})
    return _gated[cls]
