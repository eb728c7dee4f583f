"""CleanPanel: find the anomalies hiding in the pool with ELITE and a few expert labels, then exclude them.

The expert walks the ranked suspects with the keyboard (``n`` normal, ``a`` anomalous, arrows to move)
or labels several at once in the grid; ``run ELITE`` fits ELITE (Zhang et al., KDD 2021) in the
background with a progress bar (the kernel stays responsive); the panel shows the score distribution
with the expert-labeled items marked, the pollution estimate (only from items labeled in the fixed random order: ``elite/pollution.py``) and the new ranking; ``exclude`` keeps the
confirmed anomalies out of training (``Session.exclude(..., reason="anomaly")``, undoable).
Before the first ELITE fit the ranking comes from HBOS (``elite/classical.py``), a label-free outlier score
that put more anomalies on top than the unsupervised Deep SVDD across image, text and tabular sets
(``benchmarks/clean_start.py``).
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import numpy as np

from ..elite import Elite
from ..elite.inputs import session_codes
from ..elite.pollution import estimate_pollution
from .item_card import ItemCard
from .item_grid import ItemGrid
from .keyboard import KeyboardShortcuts
from .style import style_widget
from .threads import Background, on_main_thread

KEYS = {"n": "normal", "a": "anomaly", "ArrowRight": "next", "ArrowLeft": "prev"}
# the number on a suspect's card (a bare "8.75" before), explained in the grid's legend
SCORE = ("score", "ELITE's anomaly score of the item (higher = more anomalous; not a probability)")
FIRST_SCORE = ("score", "HBOS outlier score, the label-free first ranking before ELITE runs (higher = more "
               "anomalous; not a probability)")
FIRST = "hbos"   # the first ranking's detector (elite.classical)
_COLOURS = {"normal": "#2ca02c", "anomaly": "#d62728"}


class CleanPanel(W.VBox):
    """The Clean tab over ``session``; ``normal``/``anomaly`` name the two classes ELITE learns from.

    ``annotator``: who labels (default: the session's annotator, else "expert"); every label and
    exclusion written here carries it. ``background=False`` fits in the caller's thread (tests).
    ``elite_kw``: extra ``Elite`` parameters (e.g. ``epochs``)."""

    def __init__(self, session: Any, annotator: str | None = None, normal: str = "normal",
                 anomaly: str = "anomaly", k: int = 48, background: bool = True, **elite_kw: Any) -> None:
        classes = [str(c) for c in session.classes]
        missing = [c for c in (normal, anomaly) if c not in classes]
        if missing:
            shown = ", ".join(classes[:10]) + (", …" if len(classes) > 10 else "")
            raise ValueError(f"the Clean tab needs a {normal!r} and an {anomaly!r} class (ELITE learns from "
                             "a few items you mark as one or the other to find the anomalies hiding in the "
                             f"data); this project's classes ({shown}) lack "
                             f"{' and '.join(repr(m) for m in missing)}")
        default = getattr(session, "annotator", None)
        self.annotator = (annotator.strip() if isinstance(annotator, str) and annotator.strip()
                          else default if isinstance(default, str) and default.strip() else "expert")
        self.session = session
        self.normal, self.anomaly = normal, anomaly
        self.k = int(k)
        self.elite_kw = elite_kw
        self.elite: Elite | None = None
        self.order: list[int] = []
        self.pos = 0
        self._last_excluded: list[int] = []
        self._mode = "unsupervised"

        self.intro = W.HTML(
            "<b>Clean</b>: mark a few items as <kbd>n</kbd> normal or <kbd>a</kbd> anomalous "
            "(<kbd>←</kbd>/<kbd>→</kbd> move), run ELITE, exclude the confirmed anomalies.")
        self.backbone = W.Dropdown(options=self._backbones(), value="svdd", description="ELITE model",
                                   layout=W.Layout(width="260px"), style={"description_width": "initial"})
        self.rule = W.Dropdown(options=[("top score", "score"), ("largest meta-gradient", "meta"),
                                        ("nearest the threshold", "margin"), ("random", "random")],
                               value="score", description="ask next",
                               layout=W.Layout(width="280px"))
        self.run_button = W.Button(description="run ELITE", button_style="primary")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", layout=W.Layout(width="200px"))
        self.status = W.HTML()
        self.pollution = W.HTML()
        wide = W.Layout(width="auto")
        self.exclude_button = W.Button(description="exclude confirmed anomalies", button_style="danger", layout=wide)
        self.undo_button = W.Button(description="↶ bring back last excluded", layout=wide)
        self.excluded_note = W.HTML()
        self.card = ItemCard(session, size=160)
        self.focus_note = W.HTML()
        self.normal_button = W.Button(description=f"n · {normal}")
        self.anomaly_button = W.Button(description=f"a · {anomaly}")
        self.keyboard = KeyboardShortcuts(keys=list(KEYS))
        self.grid = ItemGrid(session, page_size=24, card_size=72, annotator=self.annotator, preselect=False,
                             title="<b>ranked suspects</b> (score: higher = more anomalous)")
        self.hist = _Histogram()

        self.run_button.on_click(lambda _b: self.run())
        self.exclude_button.on_click(lambda _b: self.exclude_confirmed())
        self.undo_button.on_click(lambda _b: self.undo_exclude())
        self.normal_button.on_click(lambda _b: self.mark(normal))
        self.anomaly_button.on_click(lambda _b: self.mark(anomaly))
        self.rule.observe(lambda _c: self._reorder(), names="value")
        self.keyboard.on_key(self.handle_key)
        self._progress = on_main_thread(self._progress_now)
        self._job = Background(self._work, on_done=self._done, on_error=self._failed, name="dcai-elite",
                               background=background)
        session.on("labels", on_main_thread(self._on_labels))

        focus = W.VBox([self.card, W.HBox([self.normal_button, self.anomaly_button]), self.focus_note,
                        self.keyboard], layout=W.Layout(min_width="fit-content"))   # never cuts the card
        focus.add_class("dcai-keyboard-scope")
        right = W.VBox([self.hist.widget, self.pollution,
                        W.HBox([self.exclude_button, self.undo_button]), self.excluded_note])
        super().__init__([style_widget(), self.intro,
                          W.HBox([self.backbone, self.rule, self.run_button, self.progress]), self.status,
                          W.HBox([focus, right]), self.grid])
        self.add_class("dcai-clean-panel")
        self._refresh_excluded()
        self.fit(alice=False)  # the first ranking needs no label

    def _backbones(self) -> list[tuple[str, str]]:
        opts = [("Deep SVDD", "svdd"), ("autoencoder", "ae")]
        if getattr(self.session.items, "kind", None) == "image":
            opts.append(("Deep SVDD on pixels (conv)", "conv"))
        return opts

    # -- fitting in the background -------------------------------------------------------------
    def run(self) -> None:
        """Fit ELITE on the current labels (in the background); the button says so while it runs."""
        self.fit(alice=True)

    def fit(self, alice: bool = True) -> None:
        self._mode = "elite" if alice else "unsupervised"
        self._spec = dict(backbone=self.backbone.value if alice else FIRST, alice=alice, normal=self.normal,
                          anomaly=self.anomaly, **self.elite_kw)
        self.run_button.disabled = True
        self.progress.value, self.progress.max = 0, int(self.elite_kw.get("epochs", 30))
        what = "ELITE" if alice else "the first ranking (HBOS, no labels needed)"
        self._status(f"fitting {what}…", "running")
        self._job.request()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background fit is done (scripts and tests)."""
        return self._job.wait(timeout)

    def _work(self, job) -> Elite:
        spec = dict(self._spec)

        def tick(epoch: int, epochs: int, _rec: dict) -> None:
            job.check()
            self._progress(epoch, epochs)

        return Elite(self.session, **spec).fit(callback=tick)

    def _progress_now(self, epoch: int, epochs: int) -> None:
        self.progress.max = epochs
        self.progress.value = epoch

    def _done(self, elite: Elite) -> None:
        self.elite = elite
        self.run_button.disabled = False
        self.progress.value = self.progress.max
        if elite.alice:
            flips = int((elite.pseudo_labels_[elite.train_ids_] == 1).sum())
            self._status(f"ELITE fitted in {elite.fit_seconds_:.1f} s ({elite.n_epochs_} epochs, margin C = "
                         f"{elite.C_:.3g}); {flips} pool item(s) carry ELITE's working pseudo label "
                         f"{self.anomaly} (not an estimate of the pollution)", "done")
        else:
            self._status(f"first ranking (HBOS, no labels) ready ({elite.fit_seconds_:.1f} s); label a few "
                         f"suspects {self.normal!r} and {self.anomaly!r}, then run ELITE", "done")
        self._show_results()

    def _failed(self, exc: BaseException) -> None:
        self.run_button.disabled = False
        self._status(f"could not fit: {exc}", "error")

    def _status(self, text: str, state: str) -> None:
        self.status.value = f'<span class="dcai-clean-status" data-state="{state}">{html.escape(text)}</span>'

    # -- results -------------------------------------------------------------------------------
    def _show_results(self) -> None:
        e = self.elite
        if e is None:
            return
        sus = e.suspects(self.k)
        self.grid.set_ids(sus["id"].tolist(), sus["score"].tolist(),      # named, and in the legend
                          score_name=SCORE if e.alice else FIRST_SCORE)
        self._reorder()
        self._draw_hist()
        self._show_pollution()

    def _show_pollution(self) -> None:
        """The pollution estimate from the labels in the random order (Wilson 95% interval), or why not."""
        codes = session_codes(self.session, self.normal, self.anomaly)   # today's labels, not the fit's
        est = estimate_pollution(codes, self.session.excluded(), self.elite.audit_order_)
        anom = html.escape(self.anomaly)
        floor = f"{est.confirmed:,} of {est.population:,} items confirmed {anom} so far (a lower bound)."
        if est.ok:
            self.pollution.value = (
                f'<span class="dcai-pollution" data-value="{est.estimate:.4f}" data-low="{est.low:.4f}" '
                f'data-high="{est.high:.4f}" data-n="{est.n}">estimated pollution: <b>{est.estimate:.1%}</b> '
                f"(95% interval {est.low:.1%}–{est.high:.1%}, Wilson): {est.anomalies} of the first {est.n} "
                f"items of the random order, all labeled, are {anom}. {floor}</span>")
        else:
            self.pollution.value = (
                f'<span class="dcai-pollution" data-value="" data-n="{est.n}">pollution: <b>not estimated</b>'
                f" — {html.escape(est.reason)} (choose <i>ask next: random</i>). {floor}</span>")

    def _draw_hist(self) -> None:
        e = self.elite
        lab = self.session.labeled()
        lab = lab[lab["label"].isin([self.normal, self.anomaly])]
        self.hist.update(e.scores_[e.train_ids_], e.scores_[lab["id"].to_numpy()], lab["label"].astype(str).tolist())

    def _reorder(self) -> None:
        if self.elite is None:
            return
        rule = self.rule.value if self.elite.alice or self.rule.value == "random" else "score"
        self.order = [int(i) for i in self.elite.query(len(self.elite.train_ids_), rule=rule)]
        self.pos = 0
        self._skip_labeled()
        self._show_focus()

    def _labeled_ids(self) -> set[int]:
        return set(int(i) for i in self.session.labeled()["id"])

    def _skip_labeled(self, step: int = 1) -> None:
        done = self._labeled_ids() | set(int(i) for i in self.session.excluded())
        while 0 <= self.pos < len(self.order) and self.order[self.pos] in done:
            self.pos += step

    def _show_focus(self) -> None:
        if not 0 <= self.pos < len(self.order):
            self.focus_note.value = "<i>no more suspects to label</i>"
            return
        i = self.order[self.pos]
        self.card.show(i, note=f"suspect {self.pos + 1}")
        score = float(self.elite.scores_[i]) if self.elite is not None else None
        self.card.set_badges(score=score, score_name="score")
        self.focus_note.value = f'<span class="dcai-clean-focus" data-item="{i}">#{i}: press n or a</span>'

    @property
    def current(self) -> int | None:
        """The suspect the keyboard labels now."""
        return self.order[self.pos] if 0 <= self.pos < len(self.order) else None

    # -- labeling and exclusion ----------------------------------------------------------------
    def handle_key(self, key: str) -> None:
        act = KEYS.get(key)
        if act in ("normal", "anomaly"):
            self.mark(self.normal if act == "normal" else self.anomaly)
        elif act == "next":
            self.pos = min(self.pos + 1, len(self.order))
            self._skip_labeled()
            self._show_focus()
        elif act == "prev" and self.pos > 0:
            self.pos -= 1
            self._show_focus()

    def mark(self, label: str) -> None:
        """Label the current suspect (committed before the next one shows), then move on."""
        i = self.current
        if i is None:
            return
        try:
            self.session.label([i], [label], annotator=self.annotator)
        except Exception as e:  # shown in the panel, never a traceback
            self._status(f"could not save the label: {e}", "error")
            return
        self.pos += 1
        self._skip_labeled()
        self._show_focus()

    def confirmed_anomalies(self) -> list[int]:
        """Items the expert labeled anomalous that are not excluded yet."""
        lab = self.session.labeled()
        ids = set(int(i) for i in lab.loc[lab["label"] == self.anomaly, "id"])
        return sorted(ids - set(int(i) for i in self.session.excluded()))

    def exclude_confirmed(self) -> list[int]:
        """Exclude every confirmed anomaly from training (reason "anomaly"); returns the ids."""
        ids = self.confirmed_anomalies()
        if not ids:
            self._status(f"no confirmed anomalies to exclude: label suspects {self.anomaly!r} first", "done")
            return []
        self.session.exclude(ids, annotator=self.annotator, reason="anomaly")
        self._last_excluded = ids
        self._status(f"excluded {len(ids)} confirmed anomal{'y' if len(ids) == 1 else 'ies'} from training", "done")
        self._refresh_excluded()
        return ids

    def undo_exclude(self) -> list[int]:
        """Bring back the items the last exclusion took out."""
        ids = self._last_excluded
        if not ids:
            self._status("nothing to bring back", "done")
            return []
        self.session.exclude(ids, excluded=False, annotator=self.annotator, reason="anomaly")
        self._last_excluded = []
        self._status(f"brought back {len(ids)} item(s)", "done")
        self._refresh_excluded()
        return ids

    def _refresh_excluded(self) -> None:
        n = len(self.session.excluded())
        pending = len(self.confirmed_anomalies())
        self.exclude_button.description = f"exclude {pending} confirmed anomal{'y' if pending == 1 else 'ies'}"
        self.exclude_button.disabled = pending == 0
        self.undo_button.disabled = not self._last_excluded
        self.excluded_note.value = (f'<span class="dcai-excluded" data-count="{n}">{n} item(s) excluded from '
                                    "training</span>")

    def _on_labels(self, ids=None, **_: Any) -> None:
        self._refresh_excluded()
        if self.elite is not None:
            self._draw_hist()
            self._show_pollution()


class _Histogram:
    """Bokeh histogram of the pool's scores with the expert-labeled items as coloured ticks below it."""

    def __init__(self) -> None:
        from bokeh.models import ColumnDataSource, HoverTool
        from bokeh.plotting import figure
        from jupyter_bokeh import BokehModel

        from .map_view import load_bokehjs

        load_bokehjs()
        self.bins = ColumnDataSource(dict(left=[], right=[], top=[]))
        self.marks = ColumnDataSource(dict(x=[], y=[], colour=[], label=[]))
        fig = figure(width=420, height=220, tools="pan,box_zoom,reset", toolbar_location="right",
                     title="anomaly scores of the pool; ticks = your labels")
        fig.quad(left="left", right="right", top="top", bottom=0, source=self.bins, fill_color="#9ecae1",
                 line_color="#6baed6")
        ticks = fig.scatter("x", "y", source=self.marks, color="colour", marker="triangle", size=9,
                            legend_field="label")
        fig.add_tools(HoverTool(renderers=[ticks], tooltips=[("score", "@x{0.000}"), ("label", "@label")]))
        fig.xaxis.axis_label = "score (higher = more anomalous)"
        fig.yaxis.axis_label = "items"
        self.widget = BokehModel(fig)

    def update(self, pool_scores: np.ndarray, labeled_scores: np.ndarray, labels: list[str]) -> None:
        top, edges = np.histogram(pool_scores, bins=40)
        self.bins.data = dict(left=edges[:-1].tolist(), right=edges[1:].tolist(), top=top.tolist())
        self.marks.data = dict(x=[float(s) for s in labeled_scores], y=[-0.5] * len(labels),
                               colour=[_COLOURS.get(lab, "#555") for lab in labels], label=list(labels))
