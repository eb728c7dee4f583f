"""Team mode in the app: the Label panel over a shared queue, and the Team tab (per-annotator counts,
labels/hour, CROWDLAB quality, agreement with the model, Cohen's kappa per pair as a heatmap,
Krippendorff's alpha), computed by `dcai_widgets.team.team_report` in the background.
"""
from __future__ import annotations

import html
import math
import time
from collections import deque
from typing import Any

import ipywidgets as W
import numpy as np

from ..store import ClaimLostError
from .label_panel import LabelPanel
from .label_saving import error_html
from .style import style_widget
from .threads import Background, on_main_thread


class TeamLabelPanel(LabelPanel):
    """The Label panel drawing from a `SharedQueue`: every item it shows is claimed in the store first.

    Unlike the solo panel it never falls back to a local random order (that would show unclaimed items
    and could give one item to two people): when its claimed items run out it claims the next ones at
    once. A skip releases the item's claim; an undo claims the item again. Items other annotators
    labeled are not dropped here: the shared queue hands out only what the overlap allows.

    Labels are written with the store's claim check (``claimed=True``): a page idle past its lease may
    have had its item handed to someone else; its late label is then refused (nothing written), the
    panel says who holds the item now and moves on to the next one.

    An item excluded anywhere (``Session.exclude``, e.g. by the Clean tab of another kernel) loses every
    claim on it in the same store transaction; the page learns of it when it claims next or from the
    queue's watch (every ``watch_s``), and never shows it."""

    claimed_writes = True

    def __init__(self, session: Any, queue: Any, **kwargs: Any) -> None:
        if not callable(getattr(queue, "skip", None)) or not callable(getattr(queue, "reclaim", None)):
            raise TypeError(f"TeamLabelPanel needs a SharedQueue, got {type(queue).__name__}")
        kwargs["overlap"] = True   # the queue decides who labels what; the panel skips only its own
        self._base_refit_every = int(kwargs.get("refit_every", 5))
        self._claim_lost: ClaimLostError | None = None
        # claims of the next items are taken in the background while the annotator looks at one
        self._prefetch = Background(self._claim_more, None, self._prefetch_failed, name="dcai-claim",
                                    background=kwargs.get("background", True))
        super().__init__(session, queue=queue, **kwargs)
        # items excluded in another kernel (the lead's Clean tab): the store has released their claims;
        # they are not shown, and the one on screen is passed over, as for an exclusion made here
        if callable(getattr(queue, "on_exclusions", None)):
            queue.on_exclusions(on_main_thread(lambda ids, excluded: self._on_exclusions(ids=ids, excluded=excluded)))

    def _write(self, i: int, cls: str) -> None:
        try:
            super()._write(i, cls)
        except ClaimLostError as e:   # noted for label_current (SaveRetry reports it as not saved)
            self._claim_lost = e
            raise

    def label_current(self, label: str | int) -> None:
        """Label the shown item; if its claim went to another annotator meanwhile, nothing is written:
        say so and show the next item (this page's lapsed claim on it is released)."""
        i, self._claim_lost = self.current, None
        super().label_current(label)
        lost, self._claim_lost = self._claim_lost, None
        if lost is not None and i is not None and self.current == i:
            self.skip()
            self.error.value = error_html(f"your label for item #{i} was NOT saved: {lost}. Showing the next item.")

    def refit(self, wait: bool = False) -> None:
        """Bring the queue up to the team's fit every ``refit_every`` of this page's labels. With a
        team fit (the SharedQueue default) one page fits for everyone and the rest adopt its ranking,
        so the check is cheap and is made at the solo cadence. Without it every page fits its own
        engine, as often team-wide as one person alone would: every ``refit_every`` labels times the
        number of annotators holding claims (eight pages each refitting every 5 of their own labels
        did eight times the work: 55 ms of CPU per label against 3.5 ms alone, benchmarks/RESULTS.md)."""
        if getattr(self.queue, "team_", None) is not None:
            self._since_refit = 0
            self._refitter.request()   # no "refitting…" line: most checks adopt or change nothing
            if wait:
                self._refitter.wait()
            return
        try:
            active = int(self.session.store.claims()["annotator"].nunique())
        except Exception:  # the store briefly unavailable: keep the last cadence
            active = max(1, self.refit_every // max(1, self._base_refit_every))
        self.refit_every = self._base_refit_every * max(1, active)
        super().refit(wait)

    def _refit_work(self, job: Any) -> dict | None:
        """The refit (worker thread): the team's fit (see ``refit``); when it brought a new ranking,
        claim from it (the items this page holds stay first). None when nothing changed."""
        t0 = time.perf_counter()
        self.queue.fit()
        job.check()
        if not getattr(self.queue, "changed_", True):
            return None
        cands = self.queue.candidates()
        with self._lock:
            self._pending = deque(cands)
        team = getattr(self.queue, "team_", None)
        st = team.state_ if team is not None else None
        seen = getattr(self.queue, "classes_seen_", None)
        n = getattr(self.queue, "n_labeled_", None)
        by = None if st is None or st.get("by") == team.member else str(st.get("by", "")).split("#")[0]
        return {"labels": int(n) if n is not None else int((np.asarray(self.session.label_vector()) >= 0).sum()),
                "classes": None if seen is None else len(seen),
                "seconds": float(st["fit_s"]) if by is not None else time.perf_counter() - t0,
                "notes": [str(w) for w in getattr(self.queue, "warnings_", None) or []]
                + ([f"the team's queue, fitted in {by}'s page"] if by is not None else [])}

    def _refit_done_now(self, fit: dict | None) -> None:
        if fit is not None:
            super()._refit_done_now(fit)

    def _claim_more(self, _job: Any = None) -> None:
        """Claim the next items (one store transaction) and queue them (thread-safe: no widget)."""
        got = self.queue.candidates()
        with self._lock:
            have = set(self._pending)
            self._pending.extend(i for i in got if i not in have)

    def _next_open(self, pop: bool) -> int | None:
        nxt = self._upcoming(1)
        if not nxt and pop:
            if self._prefetch.running:   # a claim is under way: take its items rather than claim twice
                self._prefetch.wait(5.0)
                nxt = self._upcoming(1)
            if not nxt:
                try:  # claim the next items now (before the first fit: in the fixed fallback order)
                    self._claim_more()
                except Exception as e:  # a store briefly unavailable: say so, keep the page alive
                    self.status.value = f"could not claim the next items: {html.escape(str(e))}"
                    return None
                nxt = self._upcoming(1)
        if not nxt:
            return None
        if pop:
            with self._lock:
                while self._pending and self._pending.popleft() != nxt[0]:
                    pass
            # claim ahead while this item is looked at, with half the queue's claim still in hand: at
            # flat out a claim under load outlasted one item (most keypresses over p95 waited for it)
            low = max(2, int(getattr(self.queue, "ahead", 4)) // 2)
            if len(self._upcoming(low)) < low:
                self._prefetch.request()
        return nxt[0]

    def _prefetch_failed(self, e: BaseException) -> None:
        self.status.value = f"could not claim the next items: {html.escape(str(e))}"

    def skip(self) -> None:
        i = self.current
        super().skip()
        if i is not None and i not in self._mine:
            try:
                self.queue.skip(i)
            except Exception as e:
                self.status.value = f"could not release item #{i}: {html.escape(str(e))}"

    def undo(self) -> Any:
        row = super().undo()
        if row is not None and self.current is not None:
            try:
                if not self.queue.reclaim(self.current):
                    self.status.value += " · someone else has claimed it since; your label is still welcome"
            except Exception as e:
                self.status.value += f" · could not claim it again: {html.escape(str(e))}"
        return row


def team_mode(team: bool | None = None, environ: Any = None) -> bool:
    """Team mode: asked for explicitly, else env DCAI_TEAM=1 (set by `dcai-widgets serve` for a team)."""
    import os

    if team is not None:
        return bool(team)
    env = os.environ if environ is None else environ
    return str(env.get("DCAI_TEAM", "")).strip() not in ("", "0")   # as app_from_env reads it


def overlap_from_env(environ: Any = None) -> float | int:
    """DCAI_TEAM_OVERLAP: a fraction of items ("0.1") or annotators per item ("2"); default 0 (none)."""
    import os

    raw = str((os.environ if environ is None else environ).get("DCAI_TEAM_OVERLAP", "") or "0").strip()
    try:
        return int(raw) if raw.isdigit() and int(raw) >= 1 else float(raw)
    except ValueError:
        raise ValueError(f"DCAI_TEAM_OVERLAP={raw!r} is neither a fraction of items (0.1) nor a number of "
                         "annotators per item (2)") from None


def team_label_panel(session: Any, queue: Any, annotator: str | None, extras: W.Widget | None = None,
                     overlap: float | int | None = None, **kwargs: Any) -> TeamLabelPanel:
    """The App's Label panel in team mode: `queue` (the engine) wrapped in a SharedQueue for `annotator`."""
    from ..team import SharedQueue

    default = getattr(session, "annotator", None)
    name = annotator or (default if isinstance(default, str) and default.strip() else "expert")
    shared = SharedQueue(session, queue, annotator=name, overlap=overlap_from_env() if overlap is None else overlap)
    return TeamLabelPanel(session, shared, extras=extras, annotator=name, initial_fit="background", **kwargs)


class Throttle:
    """Call ``fn`` at most once per ``interval_s``: a call within the interval is deferred to its end
    (one timer), so a burst of label events costs one recomputation, not one per label."""

    def __init__(self, fn: Any, interval_s: float = 5.0) -> None:
        import threading

        self.fn = fn
        self.interval_s = float(interval_s)
        self._last = float("-inf")
        self._timer: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> None:
        import threading
        import time

        with self._lock:
            wait = self._last + self.interval_s - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._fire)
                    self._timer.daemon = True
                    self._timer.start()
                return
            self._last = time.monotonic()
        self.fn()

    def _fire(self) -> None:
        import time

        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        self.fn()


def _fmt(x: Any, spec: str = ".2f") -> str:
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(xf) else format(xf, spec)


def kappa_colour(k: float) -> str:
    """A red (kappa <= 0) to green (kappa = 1) colour; grey for NaN (too few shared items)."""
    if k is None or (isinstance(k, float) and math.isnan(k)):
        return "#e0e0e0"
    t = max(0.0, min(1.0, float(k)))
    r, g = int(215 - 170 * t), int(60 + 120 * t)
    return f"#{r:02x}{g:02x}50"


class TeamPanel(W.VBox):
    """The Team tab: tables and small bokeh charts of the team's work and agreement.

    Recomputed in the background (``widgets.threads.Background``) when labels are written in this
    kernel, when the tab is shown (``refresh()``), and on the refresh button (other kernels' labels
    arrive through the store, not as events here)."""

    def __init__(self, session: Any, background: bool = True, low_quality: float = 0.5,
                 min_interval_s: float = 5.0) -> None:
        self.session = session
        self.low_quality = float(low_quality)
        self.report = None
        self.summary = W.HTML("<i>computing agreement…</i>")
        self.table = W.HTML()
        self.kappa_table = W.HTML()
        self.status = W.HTML()
        self.refresh_button = W.Button(description="⟳ refresh", layout=W.Layout(width="auto"))
        self.refresh_button.on_click(lambda _b: self.refresh())
        charts = self._build_charts()
        self._bg = Background(self._compute, self._render, self._failed, name="dcai-team",
                              background=background)
        super().__init__([style_widget(), W.HBox([W.HTML("<b>Team</b>"), self.refresh_button]), self.summary,
                          self.table, W.HBox([self.kappa_table] + charts), self.status])
        self.add_class("dcai-team-panel")
        self._on_label_event = Throttle(self._bg.request, min_interval_s if background else 0.0)
        session.on("labels", on_main_thread(self._on_labels))
        self.refresh()

    # -- compute ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Recompute the report (in the background); repeated calls meanwhile merge into one rerun."""
        self.status.value = "updating…"
        self._bg.request()

    def wait(self, timeout: float | None = None) -> bool:
        return self._bg.wait(timeout)

    def _compute(self, job) -> Any:
        from ..team import team_report
        from ..team.team_fit import fit_threads

        job.check()
        with fit_threads(1):   # one BLAS/OpenMP thread: every team page may compute this on a few shared cores
            return team_report(self.session, low_quality=self.low_quality)

    def _failed(self, e: BaseException) -> None:
        self.status.value = f'<span class="dcai-error">could not compute agreement: {html.escape(str(e))}</span>'

    def _on_labels(self, source: str | None = None, **_: Any) -> None:
        if source != "propagated":   # at most one recomputation per min_interval_s (a labeling burst)
            self._on_label_event()

    # -- render ----------------------------------------------------------------------------------
    def _render(self, rep: Any) -> None:
        self.report = rep
        n_multi = int((rep.items["n"] >= 2).sum()) if len(rep.items) else 0
        self.summary.value = (
            f'<div class="dcai-team-summary">{len(rep.annotators)} annotators · '
            f'{n_multi} items labeled by two or more · Krippendorff\'s alpha '
            f'<span class="dcai-team-alpha" data-alpha="{_fmt(rep.alpha, ".4f")}">{_fmt(rep.alpha, ".3f")}</span>'
            f'{self._fleiss_html(rep)}'
            f' · <span class="dcai-team-conflicts" data-count="{len(rep.conflicts)}">{len(rep.conflicts)} '
            f'to review</span></div>'
            + "".join(f"<div><i>{html.escape(n)}</i></div>" for n in rep.notes))
        rows = "".join(
            f'<tr data-annotator="{html.escape(str(r.annotator))}"><td>{html.escape(str(r.annotator))}</td>'
            f"<td>{int(r.items)}</td><td>{int(r.labels)}</td><td>{_fmt(r.labels_per_h, '.0f')}</td>"
            f"<td>{_fmt(r.agree_model, '.0%')}</td><td>{_fmt(r.agree_propagated, '.0%')}</td>"
            f"<td>{_fmt(r.quality)}</td></tr>"
            for r in rep.annotators.itertuples())
        self.table.value = (
            '<table class="dcai-team-annotators"><tr><th>annotator</th><th>items</th><th>labels</th>'
            '<th title="labels per active hour (pauses over 5 min excluded)">labels/h</th>'
            '<th title="share of their labels equal to a held-out model\'s prediction">agree w/ model</th>'
            '<th title="share of their labels equal to the propagated label (e.g. LANCET) where the item had one">'
            'agree w/ propagated</th>'
            '<th title="CROWDLAB annotator quality (cleanlab.multiannotator)">quality</th></tr>'
            f"{rows}</table>")
        self.kappa_table.value = self._kappa_html(rep)
        self._update_charts(rep)
        self.status.value = ""

    @staticmethod
    def _fleiss_html(rep: Any) -> str:
        """Fleiss' kappa per group of items with the same number of annotators (k), e.g. "k=2: 0.81 (40 items)"."""
        fl = getattr(rep, "fleiss", None)
        if fl is None or len(fl) == 0:
            return ""
        parts = ", ".join(
            f'<span class="dcai-team-fleiss" data-raters="{int(r.raters)}" data-items="{int(r.items)}" '
            f'data-kappa="{_fmt(r.kappa, ".4f")}">{int(r.raters)} annotators: {_fmt(r.kappa, ".3f")} '
            f"({int(r.items)} items)</span>" for r in fl.itertuples())
        return (' · <span title="Fleiss\' kappa over the items labeled by the same number of annotators">'
                f"Fleiss' kappa</span> {parts}")

    @staticmethod
    def _kappa_html(rep: Any) -> str:
        names = list(rep.kappa.columns)
        if len(names) < 2:
            return ""
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = ""
        for a in names:
            cells = ""
            for b in names:
                k = float(rep.kappa.loc[a, b])
                n = int(rep.shared.loc[a, b])
                cells += (f'<td class="dcai-kappa" data-a="{html.escape(a)}" data-b="{html.escape(b)}" '
                          f'data-kappa="{_fmt(k, ".4f")}" data-shared="{n}" title="{n} shared items" '
                          f'style="background:{kappa_colour(k)}">{_fmt(k)}</td>')
            body += f"<tr><th>{html.escape(a)}</th>{cells}</tr>"
        return (f'<table class="dcai-team-kappa"><caption>Cohen\'s kappa per pair</caption><tr><th></th>{head}</tr>'
                f"{body}</table>")

    def _build_charts(self) -> list[W.Widget]:
        from bokeh.models import ColumnDataSource, FactorRange, Range1d
        from bokeh.plotting import figure
        from jupyter_bokeh import BokehModel

        self.counts_source = ColumnDataSource(dict(annotator=[], items=[], rate=[]))
        self.kappa_source = ColumnDataSource(dict(a=[], b=[], kappa=[], colour=[], text=[]))
        counts = figure(x_range=FactorRange(), height=180, width=260, title="items labeled", toolbar_location=None)
        counts.vbar(x="annotator", top="items", width=0.8, source=self.counts_source, color="#1f77b4")
        rate = figure(x_range=FactorRange(), y_range=Range1d(0, 1), height=180, width=260,
                      title="labels per active hour", toolbar_location=None)
        rate.vbar(x="annotator", top="rate", width=0.8, source=self.counts_source, color="#2ca02c")
        heat = figure(x_range=FactorRange(), y_range=FactorRange(), height=220, width=260,
                      title="Cohen's kappa", toolbar_location=None, tooltips=[("pair", "@a / @b"), ("kappa", "@text")])
        heat.rect(x="a", y="b", width=1, height=1, source=self.kappa_source, fill_color="colour", line_color="white")
        for f in (counts, rate, heat):
            f.xaxis.major_label_orientation = 0.8
        self.figures = {"counts": counts, "rate": rate, "kappa": heat}
        from bokeh.layouts import row

        return [BokehModel(row(counts, rate, heat))]   # one document: the figures share a data source

    def _update_charts(self, rep: Any) -> None:
        ann = rep.annotators
        names = [str(a) for a in ann["annotator"]]
        # no bar where the rate is unknown (all of a person's labels in one instant, "–" in the table): a
        # bar at 0 read as "labels nothing"
        rates = [float(r) for r in ann["labels_per_h"]]
        known = [r for r in rates if not math.isnan(r)]   # an axis from 0 even when none is known yet
        self.figures["rate"].y_range.end = 1.1 * max(known) if known and max(known) > 0 else 1.0
        self.figures["rate"].title.text = ("labels per active hour" if known else
                                           "labels per active hour (none measured yet)")
        self.figures["counts"].x_range.factors = names
        self.figures["rate"].x_range.factors = names
        self.counts_source.data = dict(annotator=names, items=[int(i) for i in ann["items"]], rate=rates)
        kn = [str(a) for a in rep.kappa.columns]
        a_col, b_col, ks = [], [], []
        for a in kn:
            for b in kn:
                a_col.append(a)
                b_col.append(b)
                ks.append(float(rep.kappa.loc[a, b]))
        self.figures["kappa"].x_range.factors = kn
        self.figures["kappa"].y_range.factors = kn[::-1]   # rows top-down in the table's order
        self.kappa_source.data = dict(a=a_col, b=b_col, kappa=[0.0 if math.isnan(k) else k for k in ks],
                                      colour=[kappa_colour(k) for k in ks], text=[_fmt(k) for k in ks])
