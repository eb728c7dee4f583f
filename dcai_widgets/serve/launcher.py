"""Run Voila on the app notebook behind the gate (`guard.py`) with the bounded kernel manager.

`GuardedVoila` is Voila with three changes made in code rather than in flags, because Voila hard-codes
them: every handler gets the gate in front, the Tornado settings drop Jupyter's `_xsrf` check (the
gate's Origin rule replaces it; Voila's page-close beacon carries no `_xsrf`), and the kernel manager
is `BoundedKernelManager` with the idle culler on. It also serves `GET /dcai/api/kernels` (count, limit,
and, for a lead or the single user, one line per kernel) so operators and tests can see the kernels.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import util as _importlib_util
from pathlib import Path
from typing import Any

from tornado import web
from tornado.ioloop import PeriodicCallback
from voila.app import Voila

from .guard import Gate, Policy, Refused, gated
from .kernels import BoundedKernelManager


@dataclass
class ServeOptions:
    """What `dcai-widgets serve` decided; the launcher turns it into the gate and kernel limits."""

    ip: str = "127.0.0.1"
    allow_hosts: tuple[str, ...] = ()
    team: bool = False
    store: str | None = None       # label store with the registry (team mode)
    max_kernels: int = 8
    max_per_person: int = 2        # most open pages per team link (0: no limit)
    cull_idle_s: int = 60
    cull_interval_s: int = 10
    page_wait_s: float = 8.0
    cookie: str = "dcai-token"
    extra: dict = field(default_factory=dict)


class KernelsHandler(web.RequestHandler):
    """GET /dcai/api/kernels: {"count", "max", "pending", "kernels": [...] (lead or single user only)}."""

    def get(self) -> None:
        km = self.settings["kernel_manager"]
        who = getattr(self, "dcai_identity", None)
        team = self.settings["dcai_gate"].policy.team
        body: dict[str, Any] = {"count": km.running(), "max": km.max_kernels, "pending": km.pending,
                                "ended": dict(km.ended)}
        if not team or (who is not None and who[1] == "lead"):
            body["kernels"] = km.summary()
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))


def _page_config_hook(page_config: dict, **kw: Any) -> dict:
    """Put the page's own token in its PageConfig, so its API calls and websocket carry that token
    (JupyterLab's ServerConnection sends it) rather than whichever link this browser opened last."""
    from .kernels import current_page

    handler = current_page.get()
    token = getattr(handler, "dcai_token", None) if handler is not None else None
    if token:
        page_config["token"] = token
    return page_config


class GuardedVoila(Voila):
    """Voila behind the gate; set `options` before `initialize`."""

    options: ServeOptions = ServeOptions()
    _store: Any = None

    def _resolve(self, h: str) -> tuple[str, str] | None:
        return self._store.annotator_for_token_hash(h)

    def init_settings(self) -> dict:
        o = self.options
        self.voila_configuration.multi_kernel_manager_class = BoundedKernelManager
        self.voila_configuration.show_tracebacks = False
        self.voila_configuration.page_config_hook = _page_config_hook
        settings = super().init_settings()
        km = self.kernel_manager
        km.max_kernels = o.max_kernels
        km.max_per_person = o.max_per_person
        km.cull_idle_timeout = o.cull_idle_s
        km.cull_interval = o.cull_interval_s
        km.cull_connected = False
        resolve = None
        if o.team:
            from .identity import open_label_store

            self._store = open_label_store(o.store)
            resolve = self._resolve
        # cookies are per host, not per port: two servers on one machine must not overwrite each other's
        policy = Policy(bind_ip=o.ip, allow_hosts=o.allow_hosts, team=o.team, resolve=resolve,
                        cookie=f"{o.cookie}-{self.port}")
        self.gate = Gate(policy, km, page_wait_s=o.page_wait_s)
        from jupyter_server.log import log_request  # scrubs ?token= from the access log

        settings.update(dcai_gate=self.gate, allow_remote_access=True, disable_check_xsrf=True,
                        log_function=log_request)
        return settings

    def init_handlers(self) -> list:
        handlers = [(r"/dcai/api/kernels", KernelsHandler)]
        js = bokehjs_dir()
        if js is not None:   # BokehJS for the page's head (template "dcai"): same origin, cacheable
            handlers.append((r"/dcai/static/bokeh/(.*)", web.StaticFileHandler, {"path": str(js)}))
        handlers += list(super().init_handlers())
        return [(h[0], gated(h[1]), *h[2:]) for h in handlers]

    def listen(self) -> None:
        if self.options.team:  # end a revoked member's open pages within a few seconds
            self._revoked_watch = PeriodicCallback(self._shutdown_revoked, 3000)
            self._revoked_watch.start()
        self._sweeper = PeriodicCallback(self.kernel_manager.sweep, 1000 * self.options.cull_interval_s)
        self._sweeper.start()
        super().listen()

    async def _shutdown_revoked(self) -> None:
        try:
            await self.kernel_manager.shutdown_revoked(self._resolve)
        except Exception as e:  # noqa: BLE001 - a locked store must not stop the server
            self.log.warning("could not check for revoked links: %s", e)


TEMPLATES = Path(__file__).resolve().parents[1] / "notebooks" / "templates"


def bokehjs_dir() -> Path | None:
    """bokeh's own folder of built JavaScript (found without importing bokeh), or None."""
    spec = _importlib_util.find_spec("bokeh")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "server" / "static" / "js"
    return path if path.is_dir() else None


def use_app_template(voila_argv: list[str]) -> list[str]:
    """Serve with the package's Voila template "dcai" (no CDN links, BokehJS from this server) unless the
    command line names a template: its folder joins JUPYTER_PATH, and DCAI_BOKEHJS=page tells the
    kernels (which inherit the environment) that the page already has BokehJS."""
    if any(a.startswith(("--template", "--VoilaConfiguration.template")) for a in voila_argv):
        return voila_argv
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(TEMPLATES) + (os.pathsep + old if old else "")
    if bokehjs_dir() is not None:
        os.environ["DCAI_BOKEHJS"] = "page"
    return list(voila_argv) + ["--template=dcai"]


def run(options: ServeOptions, voila_argv: list[str]) -> None:
    """Start the guarded Voila server (blocks until it stops)."""
    voila_argv = use_app_template(voila_argv)
    GuardedVoila.options = options
    app = GuardedVoila.instance()
    app.initialize(voila_argv)
    app.start()


__all__ = ["GuardedVoila", "KernelsHandler", "Refused", "ServeOptions", "run"]
