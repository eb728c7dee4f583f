"""LancetView: what LANCET did with the labels — propagated counts by confidence, the stop gauge, a
learning curve (bokeh), and spot checks of propagated labels with an accuracy estimate.

Spot checks (not in the LANCET paper) draw a few propagated labels from every confidence bin; the
expert confirms (stored as a ``source="review"`` label by the view's annotator; a team annotator who is
not a lead stores their own ``"human"`` label, as Inspect does) or rejects and gives the right class
(also such a label). The accuracy of all propagated labels is estimated per bin with a
Wilson interval, combined by each bin's share of the propagated items (:mod:`dcai_widgets.lancet.spot`).

Confidences are LANCET's calibrated ones (:mod:`dcai_widgets.calibration`), shown as numbers only from
``SHOW_PERCENT_FROM`` human labels ("uncertain" before). Everything shown is restored from the store when
the page is reloaded (a new kernel): the propagated-label summary from ``session.propagated()``, the
spot checks from their labels (:func:`spot.checks_from_store`), the curve from the propagated
labels' model versions (:func:`spot.curve_from_store`); that read runs in the background.
"""
from __future__ import annotations

import dataclasses
import html
from typing import Any

import ipywidgets as W
import numpy as np
import pandas as pd

from ..calibration import SHOW_PERCENT_FROM
from ..lancet import spot
from ..lancet.engine import version_calibrated, version_precise
from .counts import LABELED_MEANS
from .item_card import UNCALIBRATED_WHY, UNCERTAIN_WHY, ItemCard
from .lancet_spot_checks import SpotChecks
from .threads import Background, Job, on_main_thread

LEGEND = ("<b>confidence</b>: LANCET's calibrated probability that a propagated label is right "
          f"(learned from held-out labels; <i>uncertain</i> before {SHOW_PERCENT_FROM} labels, and while those "
          "labels pin the model's accuracy only to worse than about ±10 points). "
          "<b>~{cls} 0.83</b> on an item = propagated label {cls} at confidence 0.83. Spot checks: your "
          "verdicts on propagated labels, kept as labels.")


def legend(classes: Any) -> str:
    """LEGEND with one of the project's own classes as the example (a shapes project read "~6 0.83")."""
    cls = html.escape(str(next(iter(classes)))) if len(classes) else "a"
    return LEGEND.replace("{cls}", cls)


def stop_html(r: Any) -> str:
    """The stop rule's verdict and figures (a ``lancet.StopReport``), in words that claim no more than was
    measured: the DMN part says the labeled items look like the rest in the model's embedding (a random
    sample of labels passes that at any size: the served app said "STOP: labels cover the data" at 60
    random labels on digits), the kappa part that more labels stopped changing the predictions. Neither
    is an accuracy figure; the spot checks below are."""
    agreement = getattr(r, "agreement", float("nan"))
    rounds, kmin = int(getattr(r, "rounds", 0)), getattr(r, "kappa_min", float("nan"))
    if r.stop:
        verdict = ("LANCET's stop rule is met: the last labels hardly changed the predictions, and the "
                   "labeled items look like the rest. Check the propagated labels (spot checks) before "
                   "you stop")
    elif getattr(r, "dmn_ok", False):
        verdict = "keep labeling: the labeled items look like the rest, but the predictions still change"
    else:
        verdict = "keep labeling"
    if np.isfinite(agreement):
        stab = (f"predictions' agreement between successive rounds (Cohen's kappa, last 3): {agreement:.3f}"
                f" vs {kmin} needed")
    else:
        stab = f"predictions' agreement: {rounds} of 3 rounds measured yet"
    return (f'<div class="dcai-stop" data-stop="{int(bool(r.stop))}"><b>{html.escape(verdict)}</b>'
            f'<div style="font-size:11px;color:#555">{html.escape(stab)} · DMN loss {r.dmn_loss:.3f} vs chance '
            f"{r.chance:.3f} · min weight {r.min_weight:.3f} vs alpha_t {r.alpha_t} (bar full = 2×alpha_t)"
            f"</div></div>")


class LancetView(SpotChecks, W.VBox):
    """Side panel for the Label tab; refreshes whenever ``lancet`` refits (Session "model" event)."""

    def __init__(self, session: Any, lancet: Any, per_bin: int = 2, seed: int | None = 0,
                 card_size: int = 96, annotator: str | None = None, background: bool = True,
                 label_source: str = "review") -> None:
        for name in ("propagated", "should_stop"):
            if not callable(getattr(lancet, name, None)):
                raise TypeError(f"lancet must be a dcai_widgets Lancet (needs {name}()); got {type(lancet).__name__}")
        if not isinstance(per_bin, int) or per_bin < 1:
            raise ValueError(f"per_bin must be a positive int (spot checks per confidence bin), got {per_bin!r}")
        if annotator is not None and (not isinstance(annotator, str) or not annotator.strip()):
            raise ValueError(f"annotator must be a non-empty string or None, got {annotator!r}")
        if label_source not in spot.SOURCES:
            raise ValueError(f"label_source must be one of {spot.SOURCES}, got {label_source!r}")
        # a team annotator's check is their own ("human") label; a lead's (or single user's) a review
        self.label_source = label_source
        default = getattr(session, "annotator", None)
        # spot checks are labels: they carry who made them (the same default as the Label panel's)
        self.annotator = (annotator.strip() if annotator
                          else default if isinstance(default, str) and default.strip() else "expert")
        self.session, self.lancet, self.per_bin = session, lancet, per_bin
        self._stored_curve = pd.DataFrame()
        self._team: dict | None = None   # the team's published fit this page adopted (newer than our engine)
        self._prop_mask: np.ndarray | None = None   # items counted as propagated in the summary shown
        self._prop_bin = np.zeros(0, np.int64)
        self._summary_suffix = ""
        self._own_write = False
        self._writes = 0          # spot checks written here; a store read begun before the latest is stale
        self._rng = np.random.default_rng(seed)
        self.checks = pd.DataFrame({"id": pd.Series(dtype="int64"), "label": pd.Series(dtype="object"),
                                    "confidence": pd.Series(dtype="float64"), "correct": pd.Series(dtype="bool")})
        self._queue: list[dict] = []
        self.summary = W.HTML()
        self.fit_bar = W.FloatProgress(min=0.0, max=1.0, description="retrain", layout=W.Layout(width="260px"))
        self.bins_html = W.HTML()
        self.loss_bar = W.FloatProgress(min=0.0, max=1.0, description="DMN loss", layout=W.Layout(width="260px"))
        self.weight_bar = W.FloatProgress(min=0.0, max=1.0, description="min weight", layout=W.Layout(width="260px"))
        self.kappa_bar = W.FloatProgress(min=0.0, max=1.0, description="stable", layout=W.Layout(width="260px"))
        self.gauge_text = W.HTML()
        self.estimate_html = W.HTML()
        self.card = ItemCard(session, size=card_size)
        self.card.layout.display = "none"
        self.check_text = W.HTML()
        self.draw_button = W.Button(description="☑ Spot-check propagated labels",
                                    layout=W.Layout(width="auto"))
        self.confirm_button = W.Button(description="Correct", button_style="success", disabled=True)
        self.reject_button = W.Button(description="Wrong", button_style="danger", disabled=True)
        self.right_class = W.Dropdown(options=list(session.classes), description="right class",
                                      layout=W.Layout(display="none", width="220px"))
        self.save_button = W.Button(description="Save", layout=W.Layout(display="none"))
        self.draw_button.on_click(lambda _: self.draw())
        self.confirm_button.on_click(lambda _: self.confirm())
        self.reject_button.on_click(lambda _: self.reject())
        self.save_button.on_click(lambda _: self.save_correction())
        self.curve = self._build_curve()
        # not the map's "dcai-legend" (a flex row of swatches: it put every tag of this text on its own line)
        self.legend = W.HTML(f'<div class="dcai-lancet-legend" style="font-size:11px;color:#555;line-height:1.35">'
                             f"{legend(session.classes)}</div>", layout=W.Layout(width="320px"))
        super().__init__([
            W.HTML("<b>LANCET</b>"), self.fit_bar, self.summary, self.bins_html, self.legend,
            W.HTML('<b>stop rule</b> <span style="font-size:11px;color:#555">(when more labels stop changing '
                   "the model)</span>"), self.loss_bar, self.weight_bar, self.kappa_bar, self.gauge_text,
            self.curve,
            W.HTML("<b>spot checks</b>"), self.draw_button, self.card, self.check_text,
            W.HBox([self.confirm_button, self.reject_button]), W.HBox([self.right_class, self.save_button]),
            self.estimate_html,
        ], layout=W.Layout(width="340px"))
        self.add_class("dcai-lancet-view")
        session.on("model", on_main_thread(self._on_model))
        session.on("labels", on_main_thread(self._on_labels))
        try:   # team mode: another page's fit adopted here makes this page's engine stale
            session.on("team_fit", on_main_thread(self._on_team_fit))
        except ValueError:   # a Session without that event
            pass
        if callable(getattr(lancet, "on_progress", None)):
            lancet.on_progress(on_main_thread(self._on_progress))
        self._restorer = Background(self._read_store, on_done=self._restored, on_error=self._restore_failed,
                                    name="dcai-lancet-restore", background=background)
        self.refresh()
        self._restorer.request()   # spot checks, curve and summary as the store holds them

    # -- plots ------------------------------------------------------------------------------------
    def _build_curve(self) -> W.Widget:
        from bokeh.models import ColumnDataSource
        from bokeh.plotting import figure
        from jupyter_bokeh import BokehModel

        self.curve_source = ColumnDataSource(dict(x=[], conf=[], acc=[], low=[], high=[]))
        from bokeh.models import DataRange1d

        # from 0 labels: with one version bokeh spread 59..61 around it
        fig = figure(height=230, width=320, x_axis_label="human labels", y_range=(0, 1.02),
                     x_range=DataRange1d(start=0, range_padding=0.1),
                     toolbar_location=None, title="learning curve")
        # markers as well as the line: with one model version a line alone draws nothing
        fig.line("x", "conf", source=self.curve_source, color="#1f77b4")
        fig.scatter("x", "conf", source=self.curve_source, legend_label="mean confidence", color="#1f77b4", size=5)
        fig.scatter("x", "acc", source=self.curve_source, legend_label="spot-check accuracy", color="#d62728",
                    size=6)
        fig.segment("x", "low", "x", "high", source=self.curve_source, color="#d62728")
        # the legend above the plot, in one row: inside it covered the curve's right end
        fig.legend.location = "top_left"
        fig.legend.orientation = "horizontal"
        fig.legend.label_text_font_size = "8pt"
        fig.legend.padding = fig.legend.spacing = 2
        fig.add_layout(fig.legend[0], "above")
        self.figure = fig
        return BokehModel(fig)

    # -- refresh ----------------------------------------------------------------------------------
    def _on_progress(self, done: int, total: int) -> None:
        self.fit_bar.value = done / max(1, total)
        self.fit_bar.bar_style = "success" if done >= total else "info"

    def _on_model(self, name: str | None = None, model: Any = None, **_: Any) -> None:
        if model is self.lancet:
            self._team = None          # this page's own fit is the newest again
            self.refresh()
            self._restorer.request()   # the curve as stored, with this round's propagated labels

    def _on_team_fit(self, state: dict | None = None, **_: Any) -> None:
        """This page adopted the team's fit (made on another page): show what the store holds from it
        (its propagated labels, its stop report), not this page's older engine."""
        self._team = dict(state or {})
        self.refresh()
        self._restorer.request()

    def _team_report(self) -> Any:
        """The adopted fit's stop report (a StopReport), or None if it published none."""
        from ..lancet.stop import StopReport

        d = (self._team or {}).get("stop")
        if not isinstance(d, dict):
            return None
        names = [f.name for f in dataclasses.fields(StopReport)]
        return StopReport(**{k: (float("nan") if d.get(k) is None and k not in ("reason",) else d[k])
                             for k in names if k in d})

    def _on_labels(self, ids: Any = None, source: str | None = None, **_: Any) -> None:
        # a person's label takes its item out of the propagated count at once (the map's faint count
        # follows the same event: the two panels of one page said 1,735 and 1,733); from the event's ids,
        # no store read in the keystroke path
        if source in ("human", "review", "import") and ids is not None and self._prop_mask is not None:
            mask = self._prop_mask
            hit = [int(i) for i in ids if 0 <= int(i) < len(mask) and mask[int(i)]]
            if hit:
                mask[hit] = False
                self._show_summary(int(mask.sum()))
        # a spot check made elsewhere or taken back (Backspace in the Label panel); our own are recorded here
        if source in ("undo", "review") and not self._own_write:
            self._restorer.request()
        if source == "undo":
            self.refresh()             # a retracted label may give its item its propagated label back

    # -- state from the store (background) ---------------------------------------------------------
    def _read_store(self, job: Job) -> dict:
        writes = self._writes
        checks = spot.checks_from_store(self.session)
        job.check()
        return {"checks": checks, "curve": spot.curve_from_store(self.session), "writes": writes}

    def _restored(self, res: dict) -> None:
        if res["writes"] != self._writes:
            return                     # read before a check written here since: the rerun brings it
        self.checks = res["checks"][["id", "label", "confidence", "correct"]].reset_index(drop=True)
        self._stored_curve = res["curve"]
        if self._fitted_labels() is None:
            self.refresh()             # nothing fitted in this kernel yet: show what the store holds
        else:
            if self._prop_mask is not None:   # the fit's size and calibration as stored (a reload's first
                self._summary_suffix = self._fit_text()   # refresh ran before the store was read)
                self._show_summary(int(self._prop_mask.sum()))
            self._refresh_estimate()
            self._refresh_curve()
        done = set(self.checks["id"].tolist())
        if self._queue and any(int(c["id"]) in done for c in self._queue):
            self._queue = [c for c in self._queue if int(c["id"]) not in done]
            self._show_next()

    def _restore_failed(self, e: BaseException) -> None:
        self.estimate_html.value = (f'<span style="color:#b00020">could not read spot checks from the store: '
                                    f"{html.escape(str(e) or repr(e))}</span>")

    def wait(self, timeout: float | None = 30) -> bool:
        """Block until the background store read is done (scripts, tests)."""
        return self._restorer.wait(timeout)

    # -- refresh ----------------------------------------------------------------------------------
    def _fitted_labels(self) -> int | None:
        """Human labels the model shown was fit on (this kernel's fit, else the latest stored version)."""
        if self._team is not None and self._team.get("n_labeled") is not None:
            return int(self._team["n_labeled"])
        if getattr(self.lancet, "proba_", None) is not None:
            return int(self.lancet.n_labeled_)
        c = self._stored_curve
        return int(c["human_labels"].iloc[-1]) if len(c) else None

    def _model_version(self) -> str | None:
        """The version of the model shown: the team's adopted fit, this kernel's, else the latest stored."""
        if self._team is not None:
            return self._team.get("model_version")
        if getattr(self.lancet, "proba_", None) is not None:
            return getattr(self.lancet, "model_version_", None)
        c = self._stored_curve
        return c["model_version"].iloc[-1] if len(c) else None

    def _calibrated(self) -> bool:
        """Whether the model shown was calibrated (False for ``Lancet(calibration=None)``: its stored
        confidences are raw head probabilities, so no figure of them is printed as a confidence)."""
        return version_calibrated(self._model_version())

    def _shows_percent(self) -> bool:
        """Whether the shown model's confidences are printed as figures: fit on ``SHOW_PERCENT_FROM`` labels
        and its calibration precise (``calibration.MAX_ACCURACY_SE``; the version does not end in
        ``-imprecise``)."""
        return (self._fitted_labels() or 0) >= SHOW_PERCENT_FROM and version_precise(self._model_version())

    def _propagated(self) -> pd.DataFrame:
        """Propagated labels of items no person has labeled (this kernel's fit, else the store's)."""
        if self._team is None and getattr(self.lancet, "proba_", None) is not None:
            p = self.lancet.propagated()
        else:   # not fitted in this kernel (a reload), or the team's newer fit adopted: what the store holds
            p = self.session.propagated()
        if len(p):   # labeled since the fit (or, in the store, since an older round that still holds a row)
            human = np.asarray(self.session.label_vector()) >= 0
            p = p[~human[p["id"].to_numpy(np.int64)]]
        return p[["id", "label", "confidence"]] if len(p) else pd.DataFrame({"id": [], "label": [], "confidence": []})

    def _show_bins(self) -> None:
        """The propagated items per calibrated-confidence bin (the same items the summary counts)."""
        b = self._prop_bin[self._prop_mask] if self._prop_mask is not None else np.zeros(0, np.int64)
        if not len(b):
            done = bool((np.asarray(self.session.label_vector()) >= 0).all())   # not on a keystroke: no hits
            self.bins_html.value = ("<i>every item has a label from a person: nothing to propagate</i>" if done
                                    else "<i>no propagated labels yet: label a first batch</i>")
            return
        counts = np.bincount(b, minlength=len(spot.BINS) - 1)
        rows = "".join(
            f"<tr><td>{spot.BINS[i]:.1f}–{min(spot.BINS[i + 1], 1):.1f}</td><td>{int(c)}</td>"
            f'<td><div style="background:#1f77b4;height:8px;width:{int(120 * c / max(1, counts.max()))}px">'
            f"</div></td></tr>" for i, c in enumerate(counts))
        calibrated = self._calibrated()
        note = ("" if self._shows_percent() else f"<tr><td colspan=3><i>uncertain: {UNCERTAIN_WHY}</i></td></tr>")
        head = "calibrated confidence"
        if not calibrated:   # the bins still stratify the spot checks; they are no chance of being right
            note = f"<tr><td colspan=3><i>uncalibrated: {html.escape(UNCALIBRATED_WHY)}</i></td></tr>"
            head = f'<span title="{html.escape(UNCALIBRATED_WHY)}">model probability (uncalibrated)</span>'
        self.bins_html.value = (f'<table class="dcai-lancet-bins" data-calibrated="{int(calibrated)}"><tr>'
                                f"<th>{head}</th><th>items</th><th></th></tr>{rows}{note}</table>")

    def _show_summary(self, count: int) -> None:
        self._show_bins()
        self.summary.value = (f'<div class="dcai-lancet-summary" data-propagated="{count}" '
                              f'title="items with a label propagated by LANCET and no label from a person">'
                              f"{count:,} of {len(self.session):,} items have propagated labels"
                              f"{self._summary_suffix}</div>")

    def _fit_text(self) -> str:
        """" · model fit on N labels from people" (and whose fit it is), after the propagated count."""
        fit = self._fitted_labels()
        # the labels of the fit are the labeled count's (counts.LABELED_MEANS): human, review or import
        on = "" if fit is None else (f' · <span title="{html.escape(LABELED_MEANS)}">model fit on {fit:,} '
                                     f"labels from people</span>")
        if self._team is not None:
            by = str(self._team.get("by") or "").split("#")[0]   # "ada#<page id>": the annotator's name
            on += f" (the team's fit, made on {html.escape(by)}'s page)" if by else " (the team's fit)"
        return on

    def refresh(self) -> None:
        """Redraw counts, bins, gauge and curve from the lancet's current state (or the store's)."""
        p = self._propagated()
        n = len(self.session)
        self._summary_suffix = self._fit_text()
        mask = np.zeros(n, bool)
        mask[p["id"].to_numpy(np.int64)] = True
        self._prop_mask = mask
        # per item (N,): its confidence bin where it counts as propagated; labels made later clear it
        self._prop_bin = np.full(n, -1, np.int64)
        self._prop_bin[p["id"].to_numpy(np.int64)] = spot.confidence_bin(p["confidence"].to_numpy())
        self._show_summary(len(p))
        try:
            r = self._team_report() if self._team is not None else self.lancet.should_stop()
        except RuntimeError:
            r = None
        if r is None or not np.isfinite(r.dmn_loss):
            self.loss_bar.value = self.weight_bar.value = self.kappa_bar.value = 0.0
            self.gauge_text.value = ('<i class="dcai-stop-none">'
                                     f"{html.escape(r.reason if r is not None else 'no fit on this page yet')}</i>")
        else:
            self.loss_bar.value = float(min(1.0, r.dmn_loss / r.chance))
            self.weight_bar.value = float(min(1.0, r.min_weight / max(r.alpha_t, 1e-9) / 2))
            agreement = getattr(r, "agreement", float("nan"))
            self.kappa_bar.value = float(min(1.0, max(0.0, agreement))) if np.isfinite(agreement) else 0.0
            self.gauge_text.value = stop_html(r)
        self._refresh_estimate(p)
        self._refresh_curve()

    def _refresh_curve(self) -> None:
        """Stored model versions (earlier kernels included), then this kernel's rounds not yet read back."""
        rows = [] if self._stored_curve.empty else self._stored_curve.to_dict("records")
        known = {r["model_version"] for r in rows}
        for h in getattr(self.lancet, "history_", []):
            if np.isfinite(h.get("mean_confidence", np.nan)) and h.get("model_version") not in known:
                rows.append(h)
        # an uncalibrated round's mean raw probability is no confidence: its point is left out
        rows = [r if version_calibrated(r.get("model_version")) else {**r, "mean_confidence": np.nan}
                for r in rows]
        est = getattr(self, "last_estimate", None)
        if rows and est is not None:  # the latest estimate belongs to the latest round
            rows[-1] = {**rows[-1], "spot_accuracy": est["accuracy"] if est.get("complete", True) else np.nan,
                        "spot_low": est["low"], "spot_high": est["high"]}

        def col(k: str) -> list[float]:
            return [float(r.get(k, np.nan)) if r.get(k) is not None else np.nan for r in rows]

        self.curve_source.data = dict(x=[int(r["human_labels"]) for r in rows], conf=col("mean_confidence"),
                                      acc=col("spot_accuracy"), low=col("spot_low"), high=col("spot_high"))

    def _refresh_estimate(self, p: pd.DataFrame | None = None) -> None:
        p = self._propagated() if p is None else p
        if not len(self.checks) or not len(p):
            self.estimate_html.value = "<i>no spot checks yet</i>"
            self.last_estimate = None
            return
        est = spot.estimate(p, self.checks)
        t = est["bins"]
        # a bin holding propagated labels but no check counts at 0.5 in the point estimate: with checks in
        # one bin only, "54.2%" was printed after two right answers. Until every such bin has a check, only
        # the interval (which is honest about the unchecked bins) is shown, and no point on the curve.
        open_bins = t[(t["share"] > 0) & (t["checked"] == 0)]
        self.last_estimate = est
        rows = "".join(f"<tr><td>{r.bin}</td><td>{r.share:.0%}</td><td>{r.correct}/{r.checked}</td>"
                       f"<td>{'–' if not r.checked else f'{r.low:.2f}–{r.high:.2f}'}</td></tr>"
                       for r in t.itertuples() if r.share > 0 or r.checked)
        head = (f"estimated accuracy of propagated labels: <b>{est['accuracy']:.1%}</b>" if est["complete"] else
                "accuracy of propagated labels: <b>not estimated yet</b> — no check yet in the confidence "
                f"bin{'s' if len(open_bins) > 1 else ''} {', '.join(open_bins['bin'])} "
                f"({open_bins['share'].sum():.0%} of them); somewhere in")
        acc = f'{est["accuracy"]:.4f}' if est["complete"] else ""
        self.estimate_html.value = (
            f'<div class="dcai-estimate" data-accuracy="{acc}" data-checks="{est["checked"]}">'
            f"{head} (95% interval {est['low']:.1%}–{est['high']:.1%}, {est['checked']} "
            f"check{'s' if est['checked'] != 1 else ''})</div><table><tr><th>confidence</th><th>share</th>"
            f"<th>correct</th><th>Wilson 95%</th></tr>{rows}</table>")
