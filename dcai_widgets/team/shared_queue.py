"""SharedQueue: several annotators draw from one queue engine without ever being shown the same item
by accident, through the label store's claims with leases.

Any Label queue engine (LANCET, SEALS, UncertaintyQueue: ``fit() -> self``, ``candidates(n) -> ids``,
optional ``suggest(id)``) ranks the items; each annotator's SharedQueue then claims the next items of
that ranking atomically in the store (``store.claim``), so the first to ask gets an item and the others
get the next ones. A claim is a lease: a heartbeat thread renews it while the kernel lives, and it
lapses ``lease_s`` seconds after the kernel stops (a closed or crashed page), returning the item to the
queue. A restarted kernel gets its annotator's live claims back first, so nobody loses their place.

Overlap (items deliberately shown to several annotators, to measure agreement) is set per item:
``overlap=0.3`` shows a fixed 30% of the items (chosen by a hash of the item id, the same in every
process) to ``overlap_annotators`` people; ``overlap=3`` (an int) shows every item to 3 people.
This is Label Studio's "task overlap" setting, without its locking bug (LS #795): the store claims
inside one write transaction.
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .._validate import excluded_mask
from .team_fit import TeamFit, engine_payload, fit_threads

log = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1


class LabelQueue(Protocol):
    """What the Label panel needs of a queue engine (see dcai_widgets/queue.py)."""

    def fit(self) -> Any: ...

    def candidates(self, n: int | None = None) -> list[int]: ...


class ClaimStore(Protocol):
    """The claims part of a label store (dcai_widgets.store, SQLite or PostgreSQL)."""

    def claim(self, annotator: str, candidates: Sequence[int], n: int = 1, lease_s: float = 300.0,
              per_item: int | Callable[[int], int] = 1) -> list[int]: ...

    def renew_claims(self, annotator: str, ids: Sequence[int] | None = None, lease_s: float = 300.0) -> Any: ...

    def release_claims(self, annotator: str, ids: Sequence[int] | None = None) -> Any: ...

    def claims(self) -> Any: ...


def unit_hash(item: int) -> float:
    """A fixed pseudo-random number in [0, 1) for an item id (splitmix64), equal in every process and
    run (Python's ``hash`` of a string is salted per process; of an int it is the int itself)."""
    z = (int(item) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


def overlap_rule(overlap: float | int, overlap_annotators: int = 2) -> int | Callable[[int], int]:
    """How many annotators each item is meant for, as the store's ``per_item`` argument.

    ``overlap`` a float in [0, 1]: that fraction of items (fixed by `unit_hash`) goes to
    ``overlap_annotators`` people, the rest to one; an int >= 1: every item goes to that many people."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.integer, np.floating)):
        raise TypeError(f"overlap must be a fraction in [0, 1] or an int number of annotators, got {overlap!r}")
    if isinstance(overlap, (int, np.integer)):
        if overlap < 1:
            raise ValueError(f"overlap as a number of annotators per item must be >= 1, got {overlap}")
        return int(overlap)
    frac = float(overlap)
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"overlap as a fraction of items must be within [0, 1], got {overlap}")
    if not isinstance(overlap_annotators, (int, np.integer)) or overlap_annotators < 2:
        raise ValueError(f"overlap_annotators must be an int >= 2, got {overlap_annotators!r}")
    if frac == 0.0:
        return 1
    k = int(overlap_annotators)
    return lambda item: k if unit_hash(item) < frac else 1


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _release_at_exit() -> None:
    """A kernel shut down cleanly (its page closed) gives its claims back at once, not after the lease."""
    for q in list(_LIVE):
        try:
            q.close()
        except Exception:  # the store may already be gone at interpreter exit
            pass


def fallback_order(n: int) -> np.ndarray:
    """The order unranked items are claimed in, before a fit and after the ranked window: the same
    permutation of ``n`` items in every kernel (so pages agree, and a restarted page finds its place)."""
    return np.random.default_rng(0).permutation(n)


class SharedQueue:
    """One annotator's view of a queue shared by a team, over the store's claims (module docstring).

    Parameters: ``session`` (its ``store`` must offer claims), ``queue`` (the engine that ranks items;
    default UncertaintyQueue), ``annotator`` (who claims), ``overlap`` (see `overlap_rule`),
    ``lease_s`` (a claim lapses this long after the last heartbeat), ``ahead`` (items claimed at a time:
    the one shown plus the next ones, so a keypress rarely waits for a claim; the team panel claims
    again when fewer than half are left: 8 annotators flat out on PostgreSQL with 4 waited for a claim
    on 12% of keypresses, benchmarks/RESULTS.md), ``window`` (ranked items
    asked of the engine per fit), ``heartbeat_s`` (renewal period; default lease_s / 4; 0 = none).
    ``team_fit`` (default True): one page fits the engine for the whole team and publishes its ranking and
    suggestions in the store; the others adopt them (`TeamFit`, with ``refit_labels`` people's labels
    between fits and fits taking at most ``fit_share`` of one core); False: every page fits its own.
    ``fit_threads``: BLAS/OpenMP threads while fitting (1: eight kernels on a few cores do not spin
    threads against each other; None: the libraries' default). ``watch_s``: how often the heartbeat
    thread looks for items excluded in another kernel (`on_exclusions`; 0: only when claiming).

    Learned state after ``fit()``: ``order_`` (the ranking in force, best first), ``changed_`` (whether
    that fit brought a new ranking), ``n_labeled_`` and ``classes_seen_`` (what the fit used),
    ``team_`` (the `TeamFit`, or None).
    """

    def __init__(self, session: Any, queue: LabelQueue | None = None, annotator: str | None = None,
                 overlap: float | int = 0.0, lease_s: float = 300.0, *, ahead: int = 8,
                 window: int = 256, heartbeat_s: float | None = None, overlap_annotators: int = 2,
                 team_fit: bool = True, refit_labels: int = 5, fit_share: float = 0.25,
                 fit_threads: int | None = 1, watch_s: float = 5.0) -> None:
        annotator = annotator if annotator is not None else getattr(session, "annotator", None)
        if not isinstance(annotator, str) or not annotator.strip():
            raise ValueError(f"a shared queue needs the annotator's name, got {annotator!r}")
        store = getattr(session, "store", None)
        missing = [m for m in ("claim", "renew_claims", "release_claims", "claims")
                   if not callable(getattr(store, m, None))]
        if missing:
            raise TypeError(f"the session's store {type(store).__name__} has no claims ({', '.join(missing)}); "
                            "a shared queue needs a dcai_widgets label store with claims")
        if not (isinstance(lease_s, (int, float)) and lease_s > 0):
            raise ValueError(f"lease_s must be a positive number of seconds, got {lease_s!r}")
        for name, v in (("ahead", ahead), ("window", window)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if queue is None:
            from ..queue import UncertaintyQueue

            queue = UncertaintyQueue(session)
        for name in ("fit", "candidates"):
            if not callable(getattr(queue, name, None)):
                raise TypeError(f"queue must have fit() and candidates(n); {type(queue).__name__} has no {name}()")
        self.session = session
        self.queue = queue
        self.annotator = annotator.strip()
        self.overlap = overlap
        self.overlap_annotators = overlap_annotators
        self.per_item = overlap_rule(overlap, overlap_annotators)
        self.lease_s = float(lease_s)
        self.ahead = int(ahead)
        self.window = int(window)
        self.heartbeat_s = self.lease_s / 4 if heartbeat_s is None else float(heartbeat_s)
        self.fit_threads = fit_threads
        self.order_: list[int] | None = None
        self.changed_ = False
        self.n_labeled_: int | None = None
        self.classes_seen_: list[int] | None = None
        self.team_: TeamFit | None = None
        team_api = ("try_lease", "release_lease", "lease_holder", "publish", "published", "people_labels_since")
        if team_fit and all(callable(getattr(store, m, None)) for m in team_api):   # else: each page fits its own
            engine = f"{type(queue).__module__}.{type(queue).__qualname__}"
            self.team_ = TeamFit(session.store, engine, f"{self.annotator}#{uuid.uuid4().hex[:12]}",
                                 refit_labels=refit_labels, fit_share=fit_share)
        self.labeled_: np.ndarray | None = None    # who had a label at the last fit (for the fallback order)
        self._claimed: list[int] | None = None     # this queue's latest claims; None: read the store's first
        self._taken: set[int] = set()              # every item this queue claimed (released on close)
        self._skipped: set[int] = set()
        self._lock = threading.Lock()
        self._claiming = threading.RLock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._closed = False
        self.watch_s = float(watch_s)
        self._excl_mark: int | None = None         # the store's exclusions mark when last read
        self._excluded: set[int] | None = None     # excluded items when last read
        self._excl_listeners: list[Callable[[list[int], bool], Any]] = []
        _LIVE.add(self)

    @property
    def store(self) -> ClaimStore:
        return self.session.store

    # -- queue protocol ------------------------------------------------------------------------
    def fit(self) -> SharedQueue:
        """Bring the ranking up to date (``window`` items) and start the lease heartbeat: with
        ``team_fit``, adopt the team's published fit or, when it is due, fit here and publish it;
        otherwise refit the engine here."""
        if self.team_ is None:
            self._fit_engine()
            self.changed_ = True
        else:
            outcome = self.team_.step(self._fit_for_team)
            self.changed_ = outcome != "unchanged"
            if outcome == "adopted":   # another page fitted: its ranking, labels-used and suggestions
                st = self.team_.state_
                self.order_ = [int(i) for i in st.get("ranking", [])]
                self.n_labeled_ = st.get("n_labeled")
                self.classes_seen_ = st.get("classes_seen")
                self.labeled_ = None   # read again when the fixed fallback order is needed
                self.session.emit("team_fit", state=dict(st))   # views of this page's engine: now stale
        self._start_heartbeat()
        return self

    def _fit_engine(self) -> list[int]:
        with fit_threads(self.fit_threads):
            self.queue.fit()
            try:
                order = self.queue.candidates(self.window)
            except TypeError:  # an engine whose candidates() takes no n
                order = self.queue.candidates()
        self.order_ = [int(i) for i in order]
        self.labeled_ = np.asarray(self.session.label_vector()) >= 0
        n = getattr(self.queue, "n_labeled_", None)
        seen = getattr(self.queue, "classes_seen_", None)
        self.n_labeled_ = int(n) if isinstance(n, (int, np.integer)) else None
        self.classes_seen_ = None if seen is None else [int(c) for c in np.asarray(seen).ravel()]
        return self.order_

    def _fit_for_team(self) -> dict:
        order = self._fit_engine()
        return engine_payload(self.queue, order, self.n_labeled_, self.classes_seen_)

    def candidates(self, n: int | None = None) -> list[int]:
        """Claim and return up to ``n`` (default ``ahead``) items for this annotator: the live claims
        it already holds first (a restarted kernel resumes them), then the engine's ranking, then every
        other open item in a fixed order (the same in every kernel; before the first ``fit`` ends this
        is all there is, so a page shows an item at once). Items claimed by others (beyond the
        overlap), labeled by this annotator, or skipped by it are passed over."""
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 0):
            raise ValueError(f"n must be a non-negative int or None, got {n!r}")
        want = self.ahead if n is None else int(n)
        if want == 0:
            return []
        self._start_heartbeat()
        got: list[int] = []
        with self._claiming:   # one draw at a time per page (the refit, a prefetch, a keypress); not after close
            if self._closed:
                return []
            for chunk in self._candidate_chunks():
                ids = self.store.claim(self.annotator, chunk, n=want - len(got), lease_s=self.lease_s,
                                       per_item=self.per_item)
                got += [int(i) for i in ids if int(i) not in got]
                if len(got) >= want:
                    break
            self._claimed = got[:want]
            self._taken.update(self._claimed)
        return got[:want]

    def _candidate_chunks(self):
        """Candidate ids in the order to claim them, in chunks (one claim transaction each), so a
        million-item dataset is not sent to the store whole when the first chunk suffices."""
        order = self.order_ or []
        rank = {i: k for k, i in enumerate(order)}
        # claims held first: after a restart those in the store, then the ones this queue took last
        if self._claimed is None:
            held = self.held()
            self._taken.update(held)
            if not rank and held:   # a restarted page before its first fit: in the order they were
                held = self._restart_order(held)   # claimed, so it shows the item it showed
        else:
            held = self._claimed
        held = sorted(held, key=lambda i: rank.get(i, -1))   # in the engine's order
        out = excluded_mask(self.session)      # excluded items (Session.exclude) are never claimed
        self._note_excluded(set(np.flatnonzero(out).tolist()))
        skipped = self._skipped | set(np.flatnonzero(out).tolist())
        first = [i for i in held + self._overlap_backlog() + order if i not in skipped]
        first = list(dict.fromkeys(first))
        yield first
        labeled = self.labeled_
        if labeled is None:   # before the first fit; afterwards the store skips items labeled since
            labeled = self.labeled_ = np.asarray(self.session.label_vector()) >= 0
        rest = fallback_order(len(labeled))
        rest = rest[~labeled[rest] & ~out[rest]]
        seen = set(first) | skipped
        step = max(self.window, 1024)
        for a in range(0, len(rest), step):
            chunk = [int(i) for i in rest[a:a + step] if int(i) not in seen]
            if chunk:
                yield chunk

    def _restart_order(self, held: list[int]) -> list[int]:
        """``held`` in the order this annotator's page claimed them: the team's latest published ranking
        of this engine first, then the fixed fallback order of ``_candidate_chunks`` (a page that had no
        fit yet). The store returns claims by item number: a restarted page showed its lowest-numbered
        claim, not the one it showed."""
        ranking: list = []
        if self.team_ is not None:
            try:
                st = self.team_.store.published(self.team_.name)
            except Exception:  # noqa: BLE001 - an order hint only: the claims are what matters
                st = None
            if st and st.get("engine") == self.team_.engine:
                ranking = st.get("ranking", [])
        pos = {int(i): k for k, i in enumerate(ranking)}
        n = len(self.session)
        fallback = np.empty(n, dtype=np.int64)
        fallback[fallback_order(n)] = np.arange(n)   # each item's place in _candidate_chunks' order
        return sorted(held, key=lambda i: (0, pos[i]) if i in pos else (1, int(fallback[i]) if 0 <= i < n else n))

    def _overlap_backlog(self) -> list[int]:
        """Items others labeled that the overlap still wants this annotator's label on, oldest first.
        Engines rank only unlabeled items, so without this an item's second annotator never comes."""
        if self.per_item == 1:
            return []
        ev = self.session.store.events(("human", "review"))
        if len(ev) == 0:
            return []
        first_seq = ev.groupby("id")["seq"].min()
        who = ev.groupby("id")["annotator"].agg(lambda a: set(a.dropna()))
        rule = self.per_item
        out = [int(i) for i in first_seq.sort_values(kind="stable").index
               if self.annotator not in who[i] and len(who[i]) < (rule(int(i)) if callable(rule) else rule)]
        return out

    def suggest(self, item_id: int) -> tuple[str, float] | None:
        """The engine's suggested label for an item (for the panel's accept/reject keys), if it has one."""
        team = self.team_
        if team is not None and team.state_ is not None and team.state_.get("by") != team.member:
            return team.suggestion(item_id)   # the team's fit was made in another page
        fn = getattr(self.queue, "suggest", None)
        return fn(item_id) if callable(fn) else None

    @property
    def warnings_(self) -> list:
        team = self.team_
        if team is not None and team.state_ is not None and team.state_.get("by") != team.member:
            return list(team.state_.get("warnings") or [])
        return list(getattr(self.queue, "warnings_", None) or [])

    # -- claims of this annotator --------------------------------------------------------------
    def held(self) -> list[int]:
        """Items this annotator holds a live claim on, oldest first (rebuilt from the store)."""
        df = self.store.claims()
        if df is None or len(df) == 0:
            return []
        mine = df[df["annotator"] == self.annotator]
        if "expires" in mine.columns:
            mine = mine.sort_values("expires", kind="stable")
        return [int(i) for i in mine["id"]]

    def skip(self, item_id: int) -> None:
        """This annotator passes on an item: its claim is released so someone else can take it, and
        this queue does not hand it to the same annotator again."""
        with self._lock:
            self._skipped.add(int(item_id))
        self.store.release_claims(self.annotator, [int(item_id)])

    def reclaim(self, item_id: int) -> bool:
        """Claim one given item again (after an undo made it open); False if someone else holds it."""
        with self._lock:
            self._skipped.discard(int(item_id))
        with self._claiming:
            if self._closed:
                return False
            got = self.store.claim(self.annotator, [int(item_id)], n=1, lease_s=self.lease_s,
                                   per_item=self.per_item)
            self._taken.update(int(i) for i in got)
        return int(item_id) in [int(i) for i in got]

    def renew(self) -> None:
        """Extend this annotator's live claims by ``lease_s`` (the heartbeat calls it)."""
        self.store.renew_claims(self.annotator, lease_s=self.lease_s)

    def release(self, ids: Sequence[int] | None = None) -> None:
        """Give back claims (all of this annotator's when ``ids`` is None)."""
        self.store.release_claims(self.annotator, None if ids is None else [int(i) for i in ids])

    def close(self) -> None:
        """Stop the heartbeat and release this queue's claims (a page closed). Only the items this
        queue claimed (or found held at its start): the same person may have another page open."""
        with self._claiming:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self._taken:
                self.release(sorted(self._taken))

    # -- exclusions made anywhere -----------------------------------------------------------------
    def on_exclusions(self, callback: Callable[[list[int], bool], Any]) -> None:
        """Call ``callback(ids, excluded)`` (from a worker thread) when items are excluded (or brought
        back) in any kernel: the store has already released every claim on an excluded item, and a
        page must not show it (its own kernel's Session also emits an "exclusions" event)."""
        self._excl_listeners.append(callback)

    def watch_exclusions(self) -> None:
        """Look for exclusions made since the last look (one small read unless there are some)."""
        mark_fn = getattr(self.store, "exclusions_mark", None)
        mark = mark_fn() if callable(mark_fn) else None
        if mark is not None and mark == self._excl_mark:
            return
        self._excl_mark = mark
        self._note_excluded(set(np.flatnonzero(excluded_mask(self.session)).tolist()))

    def _note_excluded(self, now: set[int]) -> None:
        with self._lock:
            before, self._excluded = self._excluded, set(now)
        if before is None:
            return
        for ids, flag in ((sorted(now - before), True), (sorted(before - now), False)):
            if ids:
                if flag:   # a store that predates releasing them on exclusion: release this queue's
                    self.release([i for i in ids if i in self._taken])
                for cb in list(self._excl_listeners):
                    try:
                        cb(ids, flag)
                    except Exception:  # a failing view must not stop the heartbeat
                        log.warning("an exclusions listener failed", exc_info=True)

    # -- heartbeat -----------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        if ((self.heartbeat_s <= 0 and self.watch_s <= 0) or self._closed
                or (self._beat is not None and self._beat.is_alive())):
            return
        ref = weakref.ref(self)
        stop = self._stop
        renew_s, watch_s = self.heartbeat_s, self.watch_s
        tick = min(p for p in (renew_s, watch_s) if p > 0)

        def beat() -> None:  # holds the queue weakly: a dropped queue's claims lapse with their lease
            next_renew = time.monotonic() + renew_s
            while not stop.wait(tick):
                q = ref()
                if q is None:
                    return
                try:
                    if watch_s > 0:
                        q.watch_exclusions()
                    if renew_s > 0 and time.monotonic() >= next_renew:
                        next_renew = time.monotonic() + renew_s
                        q.renew()
                except Exception:  # a store briefly locked or restarting: try again next beat
                    log.warning("renewing the claims of %s failed", q.annotator, exc_info=True)
                del q

        self._beat = threading.Thread(target=beat, name=f"dcai-claims-{self.annotator}", daemon=True)
        self._beat.start()

    def __repr__(self) -> str:
        return (f"SharedQueue({type(self.queue).__name__}, annotator={self.annotator!r}, "
                f"overlap={self.overlap!r}, lease_s={self.lease_s:g})")
