"""One fit of the queue's engine for the whole team, instead of one per page.

Every page of a team ranks the same items with the same engine on the same stored labels, so eight pages
refitting it on their own did the same work eight times (on a 2-core box: 27 ms of CPU per label, most of
it in refits, and keypresses waiting behind them; benchmarks/RESULTS.md). Here a page whose refit is due
first checks the team's published fit in the store: if it is recent enough it adopts its ranking and
suggestions (two small reads); only when the published fit is behind by ``refit_labels`` people's labels
does one page take the store's ``queue-fit`` lease, fit, and publish the result for all (a page that
crashes mid-fit loses the lease when it lapses; the next page due takes over).

Fits are throttled to ``fit_share`` of one core team-wide (after a fit that used c seconds of CPU the
next starts no sooner than c * (1 / fit_share - 1) later; CPU time rather than wall time, so a machine
busy with other work does not make the team refit less often) and run with one BLAS/OpenMP thread (``threads``): with the default two per
library, eight kernels on two cores spun up to 16 threads against each other and one refit of a logistic
regression cost 0.7 s of CPU instead of 35 ms (threadpoolctl; measured in benchmarks/RESULTS.md).
"""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

NAME = "queue-fit"


class FitStore(Protocol):
    """The team-wide state a label store offers (dcai_widgets.store.team.TeamMixin)."""

    def try_lease(self, name: str, holder: str, lease_s: float) -> bool: ...

    def release_lease(self, name: str, holder: str) -> bool: ...

    def publish(self, name: str, value: dict) -> None: ...

    def published(self, name: str) -> dict | None: ...

    def people_labels_since(self, seq: int) -> tuple[int, int]: ...


def fit_threads(threads: int | None) -> contextlib.AbstractContextManager:
    """Limit BLAS/OpenMP pools (process-wide, restored after) to ``threads`` while a fit runs; None: as is."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(threads))


class TeamFit:
    """Decides, for one page, whether to fit the engine here or adopt the team's published fit.

    ``store``: the label store (leases and published values); ``engine``: a name for the engine (a
    published fit of another engine is not adopted); ``member``: this page's unique holder name;
    ``refit_labels``: people's labels after which a published fit is due again; ``fit_share``: the
    share of one core that fits may take team-wide; ``name``: the store key (one per queue).

    Learned state: ``state_`` (the fit in force here: ranking, suggest, n_labeled, classes_seen,
    warnings, by, fit_s, seq, version), ``fits_`` (fits made here), ``adopted_`` (fits adopted).
    """

    def __init__(self, store: FitStore, engine: str, member: str, *, refit_labels: int = 5,
                 fit_share: float = 0.25, name: str = NAME) -> None:
        if not isinstance(refit_labels, int) or refit_labels < 1:
            raise ValueError(f"refit_labels must be a positive int, got {refit_labels!r}")
        if not (isinstance(fit_share, (int, float)) and 0 < fit_share <= 1):
            raise ValueError(f"fit_share must be within (0, 1], got {fit_share!r}")
        self.store, self.engine, self.member = store, str(engine), str(member)
        self.refit_labels, self.fit_share, self.name = int(refit_labels), float(fit_share), str(name)
        self.state_: dict | None = None
        self.fits_ = 0
        self.adopted_ = 0

    def due(self, st: dict | None) -> tuple[bool, int]:
        """(whether a new fit is due after the published ``st``, the store's latest event seq now)."""
        since, top = self.store.people_labels_since(int(st.get("seq", 0)) if st else 0)
        if st is None or st.get("engine") != self.engine:
            return True, top
        return since >= self.refit_labels and time.time() >= float(st.get("next_fit_at", 0.0)), top

    def step(self, fit_here: Callable[[], dict]) -> str:
        """Bring this page up to the team's fit: "fitted" (fitted here and published), "adopted" (took
        a newer published fit), or "unchanged". ``fit_here()`` fits the engine and returns the payload
        to publish: ranking (ids), suggest ({id: [label, confidence]}), n_labeled, classes_seen, warnings."""
        st = self.store.published(self.name)
        due, _ = self.due(st)
        if due:
            lease = max(30.0, 4.0 * float(st.get("fit_s", 0.0))) if st else 60.0
            if self.store.try_lease(self.name, self.member, lease):
                try:
                    st = self.store.published(self.name)   # another page may have published meanwhile
                    due, top = self.due(st)
                    if due:
                        return self._fit(fit_here, top)
                finally:
                    self.store.release_lease(self.name, self.member)
            elif st is None:   # the team's first fit is under way elsewhere: wait for it (background thread)
                st = self._await_first()
        return self._adopt(st)   # otherwise the latest published fit; the next check takes the one under way

    def _await_first(self, poll_s: float = 0.2, max_s: float = 60.0) -> dict | None:
        """Wait while another page makes the team's first fit (at most ``max_s``, or until its lease
        lapses: a page that died mid-fit)."""
        end = time.monotonic() + max_s
        while time.monotonic() < end:
            time.sleep(poll_s)
            new = self.store.published(self.name)
            if new is not None or self.store.lease_holder(self.name) is None:
                return new
        return self.store.published(self.name)

    def _fit(self, fit_here: Callable[[], dict], top: int) -> str:
        t0, c0 = time.perf_counter(), time.thread_time()
        payload = dict(fit_here())
        fit_s, cpu_s = time.perf_counter() - t0, time.thread_time() - c0
        now = time.time()
        payload.update(engine=self.engine, version=uuid.uuid4().hex, seq=int(top), by=self.member, fit_s=fit_s,
                       fit_cpu_s=cpu_s, fitted_at=now, next_fit_at=now + cpu_s * (1.0 / self.fit_share - 1.0))
        payload["suggest"] = {str(k): v for k, v in (payload.get("suggest") or {}).items()}
        self.store.publish(self.name, payload)
        self.state_ = payload
        self.fits_ += 1
        return "fitted"

    def _adopt(self, st: dict | None) -> str:
        if st is None or st.get("engine") != self.engine:
            return "unchanged"
        if self.state_ is not None and st.get("version") == self.state_.get("version"):
            return "unchanged"
        self.state_ = st
        self.adopted_ += 1
        return "adopted"

    def suggestion(self, item: int) -> tuple[str, float] | None:
        """The published suggestion for ``item`` (label, confidence), if the fit in force made one."""
        v = (self.state_ or {}).get("suggest", {}).get(str(int(item)))
        return (str(v[0]), float(v[1])) if v else None

    def __repr__(self) -> str:
        return f"TeamFit({self.engine}, member={self.member!r}, fits={self.fits_}, adopted={self.adopted_})"


def engine_payload(engine: Any, ranking: list[int], n_labeled: Any, classes_seen: Any) -> dict:
    """What a page publishes after fitting ``engine``: its ranking, its suggestions for the ranked
    items (so pages that did not fit can offer them), and what the fit used."""
    suggest = {}
    fn = getattr(engine, "suggest", None)
    if callable(fn):
        for i in ranking:
            try:
                s = fn(int(i))
            except Exception:   # an engine that cannot suggest for some item: none for it
                s = None
            if s is not None:
                suggest[int(i)] = [str(s[0]), float(s[1])]
    return {"ranking": [int(i) for i in ranking], "suggest": suggest,
            "n_labeled": None if n_labeled is None else int(n_labeled),
            "classes_seen": None if classes_seen is None else [int(c) for c in classes_seen],
            "warnings": [str(w) for w in (getattr(engine, "warnings_", None) or [])],
            "model_version": getattr(engine, "model_version_", None), "stop": _stop_state(engine)}


def _stop_state(engine: Any) -> dict | None:
    """The fitted engine's stop report as plain values (LANCET's; None for an engine without one), so a
    page that adopts the fit shows the stop rule of the fit in force, not of its own older engine."""
    report = getattr(engine, "report_", None)
    to_dict = getattr(report, "to_dict", None)
    if not callable(to_dict):
        return None
    def plain(v: Any) -> Any:   # NaN (a figure not measured yet) as null: strict JSON everywhere
        if isinstance(v, (bool, int, str)) or v is None:
            return v
        return float(v) if v == v else None
    return {k: plain(v) for k, v in to_dict().items()}
