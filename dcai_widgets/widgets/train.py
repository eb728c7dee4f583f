"""TrainPanel: train the downstream model on the workbench's labels and watch it learn.

The user chooses what to train on (label sources, propagated labels weighted by confidence; excluded
items are always left out), the model (an MLP on the embeddings, or a small CNN on the pixels of an image
session) and the epochs; ``Train`` runs ``dcai_widgets.train.Trainer`` in the background (the kernel stays
responsive) while a bokeh learning curve (loss and validation loss, validation accuracy per epoch) and a
progress bar are updated on the main thread; ``Stop`` ends training after the current step and keeps the
best model so far. The fitted trainer lands in ``session.models["trainer"]``. A thin view: no training
logic here.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ..train import Trainer, accuracy_vs_labels
from .style import style_widget
from .threads import Background, on_main_thread

CV_BELOW, CV_FOLDS = 30, 5   # a holdout under 30 items: also show a 5-fold estimate over all the labels

_SOURCES = [("your labels (human)", "human"), ("reviewed labels", "review"), ("imported labels", "import")]


class TrainPanel(W.VBox):
    """The Train tab over ``session``. ``background=False`` trains in the caller's thread (tests);
    ``trainer_kw``: extra ``Trainer`` parameters (e.g. ``patience``, ``lr``)."""

    def __init__(self, session: Any, epochs: int = 30, background: bool = True, name: str = "trainer",
                 **trainer_kw: Any) -> None:
        self.session = session
        self.name = name
        self.trainer_kw = trainer_kw
        self.trainer: Trainer | None = None      # the run in progress or last started
        self.fitted: Trainer | None = None       # the last finished one (also in session.models[name])
        self.intro = W.HTML("<b>Train</b> the final model on your labels; excluded items are left out.")
        self.sources = [W.Checkbox(value=v in ("human", "review"), description=d, indent=False,
                                   layout=W.Layout(width="auto")) for d, v in _SOURCES]
        self.propagated = W.Checkbox(value=False, description="propagated labels (weighted by confidence)",
                                     indent=False, layout=W.Layout(width="auto"))
        models = [("MLP on embeddings", "mlp")]
        if getattr(session.items, "kind", None) == "image":
            models.append(("small CNN on pixels", "cnn"))
        self.model = W.Dropdown(options=models, value="mlp", description="model", layout=W.Layout(width="260px"))
        self.epochs = W.BoundedIntText(value=int(epochs), min=1, max=1000, description="epochs",
                                       layout=W.Layout(width="160px"))
        self.early = W.Checkbox(value=True, description="stop early (holdout loss)", indent=False,
                                layout=W.Layout(width="auto"))
        self.train_button = W.Button(description="Train", button_style="primary")
        self.stop_button = W.Button(description="Stop", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=int(epochs), layout=W.Layout(width="220px"))
        self.status = W.HTML()
        self.curve = _Curve()
        self.labels_button = W.Button(description="accuracy vs labels", layout=W.Layout(width="auto"),
                                      tooltip="replay the label history: train on the first k labels, "
                                              "measure on a fixed holdout of them")
        self.labels_status = W.HTML()
        self.labels_curve = _LabelsCurve()
        self.labels_button.on_click(lambda _b: self.accuracy_vs_labels())
        self._point = on_main_thread(self.labels_curve.add)
        self._labels_job = Background(self._labels_work, on_done=self._labels_done, on_error=self._labels_failed,
                                      name="dcai-train-curve", background=background)
        self.train_button.on_click(lambda _b: self.train())
        self.stop_button.on_click(lambda _b: self.stop())
        self._epoch = on_main_thread(self._epoch_now)
        self._note = on_main_thread(self._status)
        self._job = Background(self._work, on_done=self._done, on_error=self._failed, name="dcai-train",
                               background=background)
        super().__init__([style_widget(), self.intro, W.HBox(self.sources + [self.propagated]),
                          W.HBox([self.model, self.epochs, self.early, self.train_button, self.stop_button, self.progress]),
                          self.status, self.curve.widget,
                          W.HBox([self.labels_button, self.labels_status]), self.labels_curve.widget])
        self.add_class("dcai-train-panel")

    # -- actions -------------------------------------------------------------------------------
    def chosen_sources(self) -> tuple[str, ...]:
        return tuple(v for (_d, v), box in zip(_SOURCES, self.sources) if box.value)

    def train(self) -> None:
        """Start training on the chosen labels (in the background); the curve restarts."""
        if self._job.running:
            self._status("training is already running; Stop it first", "running")
            return
        sources = self.chosen_sources()
        if not sources and not self.propagated.value:
            self._status("choose at least one kind of label to train on", "error")
            return
        kw = dict(self.trainer_kw)
        kw.setdefault("progress", False)
        if not self.early.value:
            kw["patience"] = None
        try:
            self.trainer = Trainer(self.session, model=self.model.value, epochs=int(self.epochs.value),
                                   sources=sources, propagated=bool(self.propagated.value),
                                   callbacks=[lambda _t, row: self._epoch(dict(row))], name=self.name, **kw)
        except Exception as e:  # noqa: BLE001 - shown in the panel
            self._failed(e)
            return
        self.curve.clear()
        self.progress.value, self.progress.max = 0, int(self.epochs.value)
        self.train_button.disabled, self.stop_button.disabled = True, False
        self._status("training…", "running")
        self._job.request()

    def stop(self) -> None:
        """Stop after the current step; the best model so far is kept and stored."""
        if self.trainer is not None:
            self.trainer.stop()
            self._status("stopping…", "running")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until training is done (scripts and tests)."""
        return self._job.wait(timeout)

    # -- background ----------------------------------------------------------------------------
    def _work(self, job: Any) -> Trainer:
        t = self.trainer.fit(check=job.check)
        if not t.stopped_ and t.holdout_["n"] < CV_BELOW and t.data_.counts["labels"] >= 2 * CV_FOLDS:
            self._note(f"trained; estimating its accuracy by {CV_FOLDS}-fold cross-validation "
                         "(the holdout is small)…", "running")
            t.cross_validate(CV_FOLDS, check=job.check)
        return t

    def _epoch_now(self, row: dict) -> None:
        self.progress.value = int(row["epoch"])
        self.curve.add(row)

    def _done(self, t: Trainer) -> None:
        self.fitted = t
        self.train_button.disabled, self.stop_button.disabled = False, True
        self.progress.value = self.progress.max if not t.stopped_ else self.progress.value
        h = t.history_
        d = t.data_.counts
        what = f"{d['labels']} labels" + (f" + {d['propagated']} propagated" if d["propagated"] else "")
        best = "; " + holdout_text(t.holdout_)
        cv = getattr(t, "cv_", None)
        if cv is not None and not t.stopped_:
            best += f"; {cv['k']}-fold cross-validation on all {cv['n']} labels: {rate_text(cv)}"
        how = "stopped" if t.stopped_ else "trained"
        self._status(f"{how} after {len(h)} epoch(s) in {t.fit_seconds_:.1f} s on {what} "
                     f"({d['excluded']} excluded){best}; stored as session.models[{self.name!r}]", "done")

    def _failed(self, exc: BaseException) -> None:
        self.train_button.disabled, self.stop_button.disabled = False, True
        self._status(f"could not train: {exc}", "error")

    def _status(self, text: str, state: str) -> None:
        self.status.value = f'<span class="dcai-train-status" data-state="{state}">{html.escape(text)}</span>'

    # -- accuracy vs labels --------------------------------------------------------------------
    def accuracy_vs_labels(self) -> None:
        """Replay the label history in the background (``dcai_widgets.train.accuracy_vs_labels``)."""
        sources = self.chosen_sources()
        if not sources:
            self._labels_note("choose at least one kind of label (human, reviewed or imported)", "error")
            return
        self._labels_sources = sources
        self.labels_curve.clear()
        self.labels_button.disabled = True
        self._labels_note("training on growing prefixes of the label history…", "running")
        self._labels_job.request()

    def _labels_work(self, job: Any) -> Any:
        kw = {k: v for k, v in self.trainer_kw.items() if k in ("lr", "batch_size", "hidden")}
        return accuracy_vs_labels(self.session, sources=self._labels_sources, on_point=self._point,
                                  check=job.check, model=self.model.value, **kw)

    def _labels_done(self, curve: Any) -> None:
        self.labels_button.disabled = False
        last = curve.iloc[-1]
        self._labels_note(f"{len(curve)} points; with all {int(last['labels'])} training labels the model gets "
                          f"{last['accuracy']:.1%} of {int(last['holdout'])} held-out labels right", "done")

    def _labels_failed(self, exc: BaseException) -> None:
        self.labels_button.disabled = False
        self._labels_note(f"could not draw the curve: {exc}", "error")

    def _labels_note(self, text: str, state: str) -> None:
        self.labels_status.value = (f'<span class="dcai-train-labels-status" data-state="{state}">'
                                    f"{html.escape(text)}</span>")


class _Curve:
    """Bokeh learning curve: training and validation loss (left) and validation accuracy (right axis)."""

    def __init__(self) -> None:
        from bokeh.models import ColumnDataSource, LinearAxis, Range1d
        from bokeh.plotting import figure
        from jupyter_bokeh import BokehModel

        from .map_view import load_bokehjs

        load_bokehjs()
        self.source = ColumnDataSource(dict(epoch=[], loss=[], val_loss=[], val_acc=[]))
        fig = figure(width=560, height=260, tools="pan,box_zoom,reset", toolbar_location="right",
                     title="learning curve", x_axis_label="epoch", y_axis_label="loss")
        fig.extra_y_ranges = {"acc": Range1d(0, 1)}
        fig.add_layout(LinearAxis(y_range_name="acc", axis_label="holdout accuracy"), "right")
        fig.line("epoch", "loss", source=self.source, color="#1f77b4", legend_label="training loss")
        fig.line("epoch", "val_loss", source=self.source, color="#ff7f0e", legend_label="holdout loss")
        fig.line("epoch", "val_acc", source=self.source, color="#2ca02c", y_range_name="acc",
                 legend_label="holdout accuracy")
        # above the plot, in one row: inside it covered the curves
        fig.legend.orientation = "horizontal"
        fig.legend.label_text_font_size = "8pt"
        fig.legend.padding = fig.legend.spacing = 2
        fig.add_layout(fig.legend[0], "above")
        self.widget = BokehModel(fig)
        self.widget.add_class("dcai-train-curve")

    def clear(self) -> None:
        self.source.data = dict(epoch=[], loss=[], val_loss=[], val_acc=[])

    def add(self, row: dict) -> None:
        self.source.stream({k: [None if row[k] != row[k] else float(row[k])] for k in ("epoch", "loss", "val_loss",
                                                                                      "val_acc")})

    @property
    def epochs(self) -> list[float]:
        return list(self.source.data["epoch"])


class _LabelsCurve:
    """Bokeh curve of holdout accuracy vs. the number of training labels."""

    def __init__(self) -> None:
        from bokeh.models import ColumnDataSource, Range1d
        from bokeh.plotting import figure
        from jupyter_bokeh import BokehModel

        self.source = ColumnDataSource(dict(labels=[], accuracy=[]))
        fig = figure(width=560, height=200, tools="pan,box_zoom,reset", toolbar_location="right",
                     title="accuracy vs. number of labels", x_axis_label="labels trained on",
                     y_axis_label="holdout accuracy", y_range=Range1d(0, 1))
        fig.line("labels", "accuracy", source=self.source, color="#9467bd")
        fig.scatter("labels", "accuracy", source=self.source, color="#9467bd", size=6)
        self.widget = BokehModel(fig)

    def clear(self) -> None:
        self.source.data = dict(labels=[], accuracy=[])

    def add(self, row: dict) -> None:
        self.source.stream({"labels": [int(row["labels"])], "accuracy": [float(row["accuracy"])]})


def holdout_text(h: dict) -> str:
    """The kept model's holdout accuracy as people should read it: right/count, the rate and its 95%
    Wilson interval (a 13-item holdout cannot tell 60% from 85%), or why there is none."""
    if not h.get("n"):
        return "no holdout to measure accuracy on (too few people's labels)"
    return f"holdout accuracy {rate_text(h, '; the holdout also chose when to stop')}"


def rate_text(r: dict, note: str = "") -> str:
    """An accuracy from ``Trainer`` (``correct``/``n``, Wilson ``low``/``high``) as "k/n = p% (95% interval
    lo-hi``note``)"."""
    return (f"{r['correct']}/{r['n']} = {r['accuracy']:.0%} "
            f"(95% interval {r['low']:.0%}-{r['high']:.0%}{note})")
