"""A bounded kernel manager: at most `max_kernels` kernels, closed pages' kernels shut down.

Each page load of a Voila app starts a kernel (~560 MB for this app) that Voila never shuts down by
itself: the page's `beforeunload` beacon was refused for a missing `_xsrf` (the gate now accepts it),
and Jupyter Server's idle culler is off by default. Here:
- the culler is on: a kernel with no open connection and no activity for `cull_idle_timeout` seconds
  is shut down (`cull_connected=False`: an open page's kernel is never culled, however idle);
- a page load is admitted only while fewer than `max_kernels` kernels run or are starting; when full,
  kernels of closed pages (connected once, none now, for `reclaim_grace_s`) and of pages that never
  connected within `unconnected_grace_s` are shut down at once, and the load waits a few seconds for
  a slot before it gets a 503 page;
- each kernel remembers the sha256 of the token of the page that started it (its owner), so the gate
  can keep other tokens away from it and `shutdown_revoked` can end a revoked member's kernels;
- one person (one team link) holds at most `max_per_person` of the slots, so an insider reloading or
  opening tabs cannot fill the server and lock colleagues out (their own closed pages go first).
"""
from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Float, Integer

from .identity import token_hash

# the page handler whose request is being served in this task (set by the gate for admitted pages)
current_page: contextvars.ContextVar[Any] = contextvars.ContextVar("dcai_current_page", default=None)


def owner_of(env: dict | None) -> str | None:
    """sha256 of the `token=` in a kernel's QUERY_STRING, or None."""
    vals = parse_qs(str((env or {}).get("QUERY_STRING", ""))).get("token")
    return token_hash(vals[0]) if vals and vals[0] else None


class BoundedKernelManager(AsyncMappingKernelManager):
    """AsyncMappingKernelManager with a kernel limit, page-close reclaim and kernel owners."""

    max_kernels = Integer(8, config=True, help="most kernels (open pages) at once")
    max_per_person = Integer(2, config=True, help="most kernels one team link holds (0: no limit)")
    reclaim_grace_s = Float(2.0, config=True, help="a closed page's kernel may be reclaimed after this")
    unconnected_grace_s = Float(180.0, config=True,
                                help="a kernel whose page never connected may be reclaimed after this")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.pending = 0  # admitted page loads whose kernel has not started yet
        self._owners: dict[str, str | None] = {}
        self._started: dict[str, float] = {}
        self._ever: set[str] = set()
        self._gone: dict[str, float] = {}  # kernel -> when its last connection closed
        # why kernels ended: the page's unload beacon, the idle culler, a full server, a revoked link
        self._ending: set[str] = set()
        self.ended = {"page_closed": 0, "culled": 0, "reclaimed": 0, "revoked": 0}

    # -- admission ------------------------------------------------------------------------------
    def running(self) -> int:
        return len(self.list_kernel_ids())

    async def admit(self, wait_s: float = 8.0) -> bool:
        """Reserve a kernel slot for a page load; False when none frees up within `wait_s`."""
        if not await self._wait_for_room(lambda: self.running() + self.pending < self.max_kernels,
                                         self.reclaim, wait_s):
            return False
        self.pending += 1
        return True

    async def _wait_for_room(self, has_room: Callable[[], bool], make_room: Callable[[], Any],
                             wait_s: float) -> bool:
        """True once ``has_room()``, calling ``await make_room()`` (reclaim closed pages' kernels) and
        checking every 0.25 s; False if there is still no room after ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while not has_room():
            await make_room()
            if has_room():
                break
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.25)
        return True

    def owned(self, owner: str) -> int:
        """Running kernels whose page was opened with the token of sha256 `owner`."""
        return sum(1 for kid in self.list_kernel_ids() if self._owners.get(kid) == owner)

    async def admit_person(self, owner: str | None, wait_s: float = 8.0) -> bool:
        """False when the person of token sha256 `owner` still holds `max_per_person` kernels with open
        pages after `wait_s` (a reload's old page takes a moment to go; their closed pages' kernels are
        shut down first). No owner or no limit: True."""
        if owner is None or self.max_per_person < 1:
            return True
        return await self._wait_for_room(lambda: self.owned(owner) < self.max_per_person,
                                         lambda: self.reclaim(owner), wait_s)

    def release(self) -> None:
        self.pending = max(0, self.pending - 1)

    def reclaimable(self, grace_s: float | None = None) -> list[str]:
        """Kernels of pages closed `grace_s` (default `reclaim_grace_s`) ago, and of pages that never
        connected within `unconnected_grace_s`."""
        grace = self.reclaim_grace_s if grace_s is None else grace_s
        now = time.monotonic()
        out = []
        for kid in self.list_kernel_ids():
            if self._kernel_connections.get(kid, 0) > 0 or kid in self._ending:
                continue
            if kid in self._ever:
                if now - self._gone.get(kid, now) >= grace:
                    out.append(kid)
            elif now - self._started.get(kid, now) >= self.unconnected_grace_s:
                out.append(kid)
        return out

    async def sweep(self) -> int:
        """Shut down kernels whose page has been gone `cull_idle_timeout` seconds even if the kernel is
        not idle (a background thread's widget updates count as activity for Jupyter's culler)."""
        ids = self.reclaimable(max(self.cull_idle_timeout, self.reclaim_grace_s))
        for kid in ids:
            self.log.info("Shutting down kernel %s: its page has been gone %ss", kid, self.cull_idle_timeout)
            await self._shutdown_quietly(kid, "culled")
        return len(ids)

    async def reclaim(self, owner: str | None = None) -> int:
        """Shut down the kernels of closed pages (`reclaimable`), only `owner`'s when given."""
        ids = [kid for kid in self.reclaimable() if owner is None or self._owners.get(kid) == owner]
        for kid in ids:
            self.log.info("Shutting down kernel %s: its page is closed and its slot is wanted", kid)
            await self._shutdown_quietly(kid, "reclaimed")
        return len(ids)

    async def _shutdown_quietly(self, kid: str, why: str) -> None:
        try:
            await self.shutdown_kernel(kid)
        except KeyError:  # already gone
            return
        self.ended[why] += 1
        self._forget(kid)

    def page_closed(self) -> None:
        """A page's unload beacon shut its kernel down (the shutdown itself is Voila's handler)."""
        self.ended["page_closed"] += 1

    # -- life cycle -----------------------------------------------------------------------------
    async def start_kernel(self, *, kernel_id: str | None = None, path: Any = None, **kw: Any) -> str:
        page = current_page.get()
        if page is not None and getattr(page, "_dcai_slot", False):
            page._dcai_slot = False  # the slot becomes this kernel
            self.release()
        elif self.running() + self.pending >= self.max_kernels and (kernel_id is None or kernel_id not in self):
            await self.reclaim()
            if self.running() + self.pending >= self.max_kernels:
                raise RuntimeError(f"kernel limit reached ({self.max_kernels})")
        kid = await super().start_kernel(kernel_id=kernel_id, path=path, **kw)
        self._owners[kid] = owner_of(kw.get("env"))
        self._started.setdefault(kid, time.monotonic())
        return kid

    def notify_connect(self, kernel_id: str) -> None:
        super().notify_connect(kernel_id)
        self._ever.add(kernel_id)
        self._gone.pop(kernel_id, None)

    def notify_disconnect(self, kernel_id: str) -> None:
        super().notify_disconnect(kernel_id)
        if self._kernel_connections.get(kernel_id, 0) <= 0:
            self._gone[kernel_id] = time.monotonic()

    def _forget(self, kid: str) -> None:
        for d in (self._owners, self._started, self._gone):
            d.pop(kid, None)
        self._ever.discard(kid)

    async def shutdown_kernel(self, kernel_id: str, now: bool = False, restart: bool = False) -> None:
        self._ending.add(kernel_id)
        try:
            await super().shutdown_kernel(kernel_id, now=now, restart=restart)
        finally:
            self._ending.discard(kernel_id)

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        if kernel_id not in self or kernel_id in self._ending:  # being shut down (e.g. its page's beacon)
            return
        await super().cull_kernel_if_idle(kernel_id)
        if kernel_id not in self:
            self.ended["culled"] += 1
            self._forget(kernel_id)

    def owner(self, kernel_id: str) -> str | None:
        """sha256 of the token that opened this kernel's page (None: single-user mode or unknown)."""
        return self._owners.get(kernel_id)

    async def shutdown_revoked(self, resolve: Any) -> int:
        """Shut down kernels whose owner token no longer resolves (revoked). Returns how many."""
        n = 0
        for kid in list(self.list_kernel_ids()):
            h = self._owners.get(kid)
            if h is not None and resolve(h) is None:
                self.log.warning("Shutting down kernel %s: its link was revoked", kid)
                await self._shutdown_quietly(kid, "revoked")
                n += 1
        return n

    def summary(self) -> list[dict]:
        """One dict per kernel: id, connections, execution_state, last_activity (ISO), ever_connected."""
        out = []
        for kid in self.list_kernel_ids():
            k = self._kernels.get(kid)
            last = getattr(k, "last_activity", None)
            out.append({"id": kid, "connections": int(self._kernel_connections.get(kid, 0)),
                        "execution_state": getattr(k, "execution_state", None),
                        "last_activity": last.isoformat() if last is not None else None,
                        "ever_connected": kid in self._ever})
        return out
