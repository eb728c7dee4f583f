"""InspectPanel: which training items drive a prediction, and which labels look wrong (MetaStore view).

A thin view over ``dcai_widgets.metastore``: the session's small model is trained on the labels the user
chooses ("train on": your labels by default; optionally imported and propagated ones) and its gradient
factors collected in the background (``widgets.threads.Background``: coalesced, results handed to the
main thread); it retrains when those labels change. A list of validation items (misclassified first)
opens the top proponents/opponents of the chosen item, and a suspects list lets the expert relabel
(``source="review"``, with the page's annotator; in a team, an annotator who is not a lead writes
``source="human"``: a review label would override colleagues' labels), confirm, or exclude each item,
by mouse or keyboard.
The "model" choice inspects instead a model the Train tab stored in ``session.models`` (its weights,
holdout and checkpoints). The confidence shown for a prediction is calibrated on cross-fitted labels
(``metastore.inspect_model.calibrate``), and "uncertain" before ``calibration.SHOW_PERCENT_FROM`` labels.
"""
from __future__ import annotations

import atexit
import html
import weakref
from typing import Any

import ipywidgets as W
import numpy as np
import torch

from ..calibration import SHOW_PERCENT_FROM, show_confidence
from ..metastore.inspect_model import (TRAIN_SETS, InspectModel, build_inspect_model, calibrate, inspect_model_from,
                                       session_models, training_set)
from .inspect_actions import MOVE_KEYS, SuspectActions, class_keys
from .inspect_choice import OWN, ModelChoice
from .item_card import ItemCard
from .item_grid import NO_CLASS, ItemGrid
from .keyboard import KeyboardShortcuts, KeyHelp
from .style import style_widget
from .threads import Background, on_main_thread

ALL = "__all__"
# the number on proponent/opponent cards, explained in the grids' legend
INFLUENCE = ("influence", "TracIn influence of that training item on the shown item's prediction "
             "(positive: pushes toward its label, negative: away from it)")
_LIVE: weakref.WeakSet = weakref.WeakSet()
_MADE: set[str] = set()      # factor-store folders made by panels and not yet removed (removed at exit)


class InspectPanel(ModelChoice, SuspectActions, W.VBox):
    """Influence view over one Session: validation items, proponents/opponents, and a suspects review list.

    ``InspectPanel(session)`` trains + collects factors in the background (``background=False`` runs it in
    the constructor, for scripts and tests). ``train_on`` picks the labels trained on (``TRAIN_SETS``);
    ``auto_retrain`` retrains when those labels change. ``show_item(id)``, ``relabel(id, label)``,
    ``confirm(id)``, ``exclude(id)``, ``retrain()`` and ``handle_key(key)`` drive it from Python; ``close()``
    removes the temporary factor store (also done at interpreter exit). ``path``: a folder for the factor
    stores (one ``run-N`` folder per training run, removed when a newer run replaces it); None: temporary.
    ``model``: a key of ``session.models`` (a fitted ``train.Trainer``) to inspect instead of training the
    panel's own model ("" / None: its own); ``calibrate``: show calibrated confidences (``folds`` more
    trainings per run once ``calibration.SHOW_PERCENT_FROM`` labels exist; False: always "uncertain").
    """

    def __init__(self, session: Any, path: str | None = None, k: int = 8, n_suspects: int = 20,
                 background: bool = True, auto_start: bool = True, annotator: str | None = None,
                 epochs: int = 10, train_on: str = "people", auto_retrain: bool = True,
                 model: str | None = None, calibrate: bool = True, label_source: str = "review") -> None:
        if label_source not in ("review", "human"):
            raise ValueError(f"label_source={label_source!r}: use 'review' (a lead or the single user) or "
                             f"'human' (a team annotator's own label)")
        if int(k) < 1 or int(n_suspects) < 1:
            raise ValueError(f"k and n_suspects must be positive ints, got k={k!r}, n_suspects={n_suspects!r}")
        if train_on not in TRAIN_SETS:
            raise ValueError(f"train_on={train_on!r}: use one of {list(TRAIN_SETS)}")
        if model and model not in session_models(session):
            raise ValueError(f"model={model!r}: session.models has no trained model by that name; have "
                             f"{sorted(session_models(session)) or 'none'}")
        self.session = session
        self.path = path
        self.k = int(k)
        self.n_suspects = int(n_suspects)
        self.background = background
        self.annotator = annotator
        self.label_source = label_source  # what relabel/confirm write: "review" wins over people's labels
        self.epochs = int(epochs)
        self.auto_retrain = bool(auto_retrain)
        self.calibrate = bool(calibrate)
        self._chosen_model = model or OWN     # read by the background work (never the widget from a thread)
        self.classes = [str(c) for c in session.classes]
        self.im: InspectModel | None = None
        self.current: int | None = None
        self.cursor: int | None = None          # index of the highlighted suspect row (keyboard)
        self.suspects_frame = None
        self._filling = False
        self._runs = 0
        self._train_on = train_on        # read by the background work (never the widget from a thread)
        self._started = False
        self._own_write = False          # a label written by this panel (shown as pending, not auto-retrained)
        self.pending = 0                 # labels changed since the model shown was trained

        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="factors",
                                        layout=W.Layout(width="360px"))
        self.status = W.HTML("<i>not started</i>")
        self.train_pick = W.Dropdown(options=[(d, key) for key, (_s, d) in TRAIN_SETS.items()], value=train_on,
                                     description="train on", layout=W.Layout(width="420px"))
        self.model_pick = W.Dropdown(options=self._model_options(), description="model",
                                     layout=W.Layout(width="420px"))
        self.model_pick.value = self._chosen_model
        self.train_pick.disabled = bool(self._chosen_model)
        self.training_info = W.HTML()
        self.layer_pick = W.Dropdown(options=[("all layers", ALL)], value=ALL, description="layer",
                                     layout=W.Layout(width="240px"))
        self.ckpt_pick = W.Dropdown(options=[("all (TracIn-CP)", ALL)], value=ALL, description="checkpoint",
                                    layout=W.Layout(width="260px"))
        self.retrain_button = W.Button(description="⟳ retrain with current labels",
                                       layout=W.Layout(width="auto"))
        self.items_list = W.Select(options=[], rows=14, layout=W.Layout(width="300px"))
        self.query_card = ItemCard(session, size=112)
        self.query_info = W.HTML()
        self.pro_grid = ItemGrid(session, preselect=False, page_size=self.k, card_size=64,
                                 annotator=annotator, title="<b>proponents</b> (push toward this label)",
                                 score_name=INFLUENCE)
        self.opp_grid = ItemGrid(session, preselect=False, page_size=self.k, card_size=64,
                                 annotator=annotator, title="<b>opponents</b> (push away from it)",
                                 score_name=INFLUENCE)
        self.suspects_box = W.VBox([])
        self.suspects_status = W.HTML()
        self.layer_pick.observe(self._on_scope, names="value")
        self.ckpt_pick.observe(self._on_scope, names="value")
        self.items_list.observe(self._on_pick, names="value")
        self.train_pick.observe(self._on_train_pick, names="value")
        self.model_pick.observe(self._on_model_pick, names="value")
        self.retrain_button.on_click(lambda _b: self.retrain())

        self.key_help = KeyHelp(self._keys(), title="Inspect: keyboard shortcuts")
        self.keyboard = KeyboardShortcuts(keys=list(MOVE_KEYS) + ["c", "e", "r"] + class_keys(len(self.classes)))
        self.keyboard.on_key(self.handle_key)
        self.key_help.attach(self.keyboard)

        toolbar = W.HBox([self.model_pick, self.train_pick, self.retrain_button, self.layer_pick, self.ckpt_pick, self.progress],
                         layout=W.Layout(flex_flow="row wrap", align_items="center"))
        left = W.VBox([W.HTML("<b>validation items</b> (misclassified first)"), self.items_list])
        right = W.VBox([W.HBox([self.query_card, self.query_info]), self.pro_grid, self.opp_grid],
                       layout=W.Layout(flex="1"))
        suspects = W.VBox([W.HTML("<b>suspects</b>: training items whose labels look wrong (the model's margin "
                                  "for the label, low across checkpoints; nearest neighbours labeled otherwise); "
                                  "relabel, confirm or exclude"), self.suspects_status, self.suspects_box])
        super().__init__([style_widget(), toolbar, self.training_info, self.status,
                          W.HBox([self.keyboard, self.key_help.button]), self.key_help,
                          W.HBox([left, right]), suspects])
        self.add_class("dcai-inspect")
        self.add_class("dcai-keyboard-scope")
        self._set_progress = on_main_thread(self._progress_value)      # wrappers made here, on the main thread
        self._show_training_set_main = on_main_thread(self._show_training_set)
        self._job = Background(self._prepare, on_done=self._prepared, on_error=self._failed,
                               name="dcai-inspect-train", background=background)
        self._on_labels_cb = self._on_labels
        session.on("labels", self._on_labels_cb)
        self._models_changed = on_main_thread(self._on_models_main)
        self._on_model_cb = self._on_model
        if hasattr(session, "on"):
            session.on("model", self._on_model_cb)
        _LIVE.add(self)
        self._show_training_set()
        if auto_start:
            self.start()

    # -- preparation (background) -------------------------------------------------------------------
    def start(self) -> None:
        """Train the model and collect factors (in the background unless ``background=False``); a request
        while a run is in progress makes one more run afterwards (the latest labels are always trained on)."""
        self._started = True
        self.retrain_button.disabled = True
        self.status.value = f"<i>training the model on {html.escape(self._training_text())}…</i>"
        self._job.request()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until background preparation is done (for scripts and tests)."""
        return self._job.wait(timeout)

    def _progress_value(self, v: float) -> None:
        self.progress.value = float(v)

    def _prepare(self, job: Any) -> InspectModel:
        """Background thread: no widget is touched here (progress goes through ``on_main_thread``)."""
        self._runs += 1
        path = None if self.path is None else f"{self.path}/run-{self._runs}"
        self._set_progress(0.0)
        if self._chosen_model:
            im = inspect_model_from(self.session, self._chosen_model, path=path)
        else:
            im = build_inspect_model(self.session, path=path, epochs=self.epochs,
                                     excluded=self.session.excluded() if hasattr(self.session, "excluded") else (),
                                     train_on=self._train_on, check=job.check,
                                     progress=lambda e, n: self._set_progress(0.2 * e / n))
        im.owns_path = True      # temporary or this panel's run-N folder: removed when replaced or closed
        _MADE.add(str(im.ms.path))   # a run cancelled after this point is still removed at exit
        try:
            if self.calibrate and self._n_trusted(im) >= SHOW_PERCENT_FROM:
                self._set_progress(0.2)
                calibrate(im, check=job.check)
            self._set_progress(0.3)
        except BaseException:
            im.close()
            raise
        names = list(im.states)

        def on_progress(ck: str, done: int, total: int | None) -> None:
            frac = (names.index(ck) + (done / total if total else 1.0)) / len(names) if ck in names else 1.0
            self._set_progress(0.3 + 0.7 * frac)

        try:
            im.collect(progress=on_progress, check=job.check)
        except BaseException:
            im.close()
            raise
        return im

    def _prepared(self, im: InspectModel) -> None:
        old, self.im = self.im, im
        if old is not None:
            old.close()       # the previous model's factors are never shown again
        self.progress.value = 1.0
        self.retrain_button.disabled = False
        self.current = None
        self.pending = 0
        self._show_training_set()
        self._safe(self._fill)

    def _failed(self, e: BaseException) -> None:
        self.retrain_button.disabled = False
        self.status.value = (f'<span class="dcai-error">could not prepare the Inspect panel: '
                             f"{html.escape(str(e))}</span>")

    def retrain(self) -> None:
        """Retrain on the chosen labels and current exclusions and collect factors again (a model from
        ``session.models``: take its current weights again)."""
        self.start()

    def close(self) -> None:
        """Stop listening, cancel background work, and remove the factor store of the model shown."""
        if not hasattr(self, "_job"):      # refused in __init__ (bad arguments): nothing was started
            return
        self._job.cancel()
        self.session.off("labels", self._on_labels_cb)
        if hasattr(self.session, "off"):
            self.session.off("model", self._on_model_cb)
        self._job.wait(30)
        if self.im is not None:
            self.im.close()
            self.im = None
        _LIVE.discard(self)

    # -- training set ---------------------------------------------------------------------------------
    def _training_text(self) -> str:
        if self._chosen_model:
            return self._model_text()
        try:
            return training_set(self.session, self._train_on).describe()
        except Exception:  # noqa: BLE001 - a description must never break the panel
            return TRAIN_SETS[self._train_on][1]

    def _show_training_set(self) -> None:
        now = self._training_text()
        shown = self.im.training.describe() if self.im is not None and self.im.training is not None else None
        trained = (f"; the model shown was trained on {html.escape(shown)}"
                   if shown and shown != now and not self._chosen_model else "")
        if self.pending:
            trained += f"; {self.pending} of your review labels since then: retrain (r) to apply them"
        self.training_info.value = (f'<div class="dcai-inspect-training">train on: <b>{html.escape(now)}</b>'
                                    f"{trained}</div>")

    def _on_train_pick(self, change: dict) -> None:
        self._train_on = change["new"]
        self._show_training_set()
        self._restart()

    def _on_labels(self, ids=None, labels=None, source=None, annotator=None, **_kw) -> None:
        """Session event (any thread): retrain when labels the model trains on changed (coalesced by
        ``Background``). This panel's own review labels are counted as pending instead (the suspects list
        does not change under the reviewer's hands); "r" or the button retrains with them."""
        used = TRAIN_SETS[self._train_on][0]
        if source not in used and source != "undo":
            return
        if self._chosen_model:     # a Train-tab model changes when it is retrained there ("model" event)
            self._show_training_set_main()
            return
        if self._own_write:
            self.pending += len(ids or ())
            self._show_training_set_main()
            return
        self._show_training_set_main()
        if self.auto_retrain and self._started:
            self._job.request()

    # -- views ------------------------------------------------------------------------------------------
    def _fill(self) -> None:
        im = self.im
        ms = im.ms
        self._filling = True
        try:
            self.layer_pick.options = [("all layers", ALL)] + [(n, n) for n in ms.layers]
            self.layer_pick.value = ALL
            self.ckpt_pick.options = [("all (TracIn-CP)", ALL)] + [(c, c) for c in ms.checkpoints]
            self.ckpt_pick.value = ALL
        finally:
            self._filling = False
        pred, raw = im.predict(im.val_ids)
        conf = im.confidence if im.confidence is not None else raw
        shown = [show_confidence(c if im.confidence is not None else None, im.n_calibration) for c in conf]
        truth = im.y[im.val_ids]
        wrong = pred != truth
        order = np.lexsort((conf, ~wrong))          # misclassified first, least confident first
        self._pred = dict(zip(im.val_ids.tolist(), zip(pred.tolist(), shown)))
        opts = []
        for j in order:
            i = int(im.val_ids[j])
            mark = "✗ " if wrong[j] else ""
            opts.append((f"{mark}#{i}  {self.classes[truth[j]]} → {self.classes[pred[j]]} ({shown[j]})", i))
        self.items_list.options = opts
        who = f"session.models[{im.source!r}]" if im.source else "Inspect's own model"
        text = (f"{who}: {len(im.train_ids)} training items, {len(im.val_ids)} validation items held out "
                f"({int(wrong.sum())} misclassified), {len(ms.checkpoints)} checkpoints, layers "
                f"{', '.join(ms.layers)}; {ms.storage_report()['bytes'].sum() / 2**20:.1f} MiB of factors; "
                + self._confidence_note(im))
        self.status.value = (f'<span class="dcai-inspect-ready" data-model="{html.escape(im.source or OWN)}">'
                             f"{html.escape(text)}</span>")
        if opts:
            self.items_list.value = opts[0][1]      # triggers show_item
        self.refresh_suspects()

    def _scope(self) -> dict:
        lay = self.layer_pick.value
        ck = self.ckpt_pick.value
        return {"layers": None if lay == ALL else lay, "checkpoint": None if ck == ALL else ck}

    def _require(self) -> InspectModel:
        if self.im is None:
            raise RuntimeError("the Inspect panel is still preparing (training + factor collection); wait()")
        return self.im

    def show_item(self, item_id: int) -> None:
        """Show a validation item with its top proponents and opponents (TracIn-CP scores)."""
        im = self._require()
        i = int(item_id)
        if i not in set(im.val_ids.tolist()):
            raise ValueError(f"item {i} is not a validation item of this model; pick one of the listed items")
        self.current = i
        x = im.X[i]
        y = torch.as_tensor(int(im.y[i]))
        sc = self._scope()
        # a proponent pushes toward the label (influence > 0), an opponent away (< 0): the top k of each
        # side stop where the sign does (the screenshot listed "influence -3.7" under proponents)
        pro = im.ms.proponents(x, y, k=self.k, **sc)
        opp = im.ms.opponents(x, y, k=self.k, **sc)
        pro, opp = pro[pro["score"] > 0], opp[opp["score"] < 0]
        self.pro_grid.set_ids(pro["id"].tolist(), pro["score"].tolist())
        self.opp_grid.set_ids(opp["id"].tolist(), opp["score"].tolist())
        pred, conf = self._pred.get(i, (None, None))
        self.query_card.show(i, note="validation")
        lab = self.classes[int(im.y[i])]
        pl = f"{self.classes[pred]} ({conf})" if pred is not None else "?"
        self.query_info.value = (f'<div class="dcai-inspect-query" data-item="{i}">label <b>{html.escape(lab)}</b>'
                                 f"<br>model says <b>{html.escape(pl)}</b><br>proponents: training items whose "
                                 "gradient steps lowered this item's loss; opponents raised it"
                                 + "".join(f"<br><i>only {len(d)} training item{'s' if len(d) != 1 else ''} "
                                           f"{what}</i>" for d, what in ((pro, "push toward this label"),
                                                                         (opp, "push away from it"))
                                           if len(d) < self.k) + "</div>")

    def refresh_suspects(self) -> None:
        """Recompute the suspects list for the chosen layer and checkpoint."""
        im = self._require()
        vx = im.X[torch.as_tensor(im.val_ids)]
        vy = torch.as_tensor(im.y[im.val_ids])
        k = min(self.n_suspects, len(im.train_ids))
        df = im.ms.suspects(vx, vy, k=k, train_x=im.X, **self._scope())
        self.suspects_frame = df
        excluded = set(self.session.excluded().tolist()) if hasattr(self.session, "excluded") else set()
        self.suspects_box.children = [self._suspect_row(int(r.id), r.label, int(r.suggested), excluded)
                                      for r in df.itertuples()]
        self.cursor = 0 if len(df) else None
        self._highlight()
        self.suspects_status.value = (f"{len(df)} most suspect of {len(im.train_ids)} training items; keys: j/k "
                                      "move, c confirm, e exclude, 1-9/0 relabel, ? for all keys")

    def _suspect_row(self, i: int, label: float, suggested: int, excluded: set) -> W.HBox:
        card = ItemCard(self.session, i, size=56)
        lab = self.classes[int(label)] if np.isfinite(label) else "?"
        info = W.HTML(f'<div class="dcai-suspect" data-item="{i}">label <b>{html.escape(lab)}</b> · model suggests '
                      f"<b>{html.escape(self.classes[suggested])}</b></div>", layout=W.Layout(width="220px"))
        # "" is the "choose a class" entry (a None value renders a blank box), as in ItemGrid
        pick = W.Dropdown(options=[(NO_CLASS, "")] + [(c, c) for c in self.classes], value="",
                          layout=W.Layout(width="160px"))
        relabel = W.Button(description="relabel", button_style="primary", disabled=True,
                           tooltip="choose a class first", layout=W.Layout(width="auto"))
        confirm = W.Button(description="confirm", layout=W.Layout(width="auto"))
        exclude = W.Button(description="exclude" if i not in excluded else "include",
                           button_style="warning", layout=W.Layout(width="auto"))
        note = W.HTML("<i>excluded</i>" if i in excluded else "")
        pick.observe(lambda ch: setattr(relabel, "disabled", not ch["new"]), names="value")
        relabel.on_click(lambda _b: bool(pick.value) and self._act(note, self.relabel, i, pick.value))
        confirm.on_click(lambda _b: self._act(note, self.confirm, i))
        exclude.on_click(lambda _b: self._toggle_exclude(note, exclude, i))
        row = W.HBox([card, info, pick, relabel, confirm, exclude, note], layout=W.Layout(align_items="center"))
        row.add_class("dcai-suspect-row")
        return row

    # -- events ----------------------------------------------------------------------------------------
    def _on_pick(self, change: dict) -> None:
        if change["new"] is not None and self.im is not None:
            self._safe(self.show_item, change["new"])

    def _on_scope(self, _change: dict) -> None:
        if self.im is None or self._filling:
            return
        if self.current is not None:
            self._safe(self.show_item, self.current)
        self._safe(self.refresh_suspects)

    def _safe(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # a failing query shows its reason; the panel stays usable
            self.status.value = f'<span class="dcai-error">{html.escape(str(e))}</span>'


@atexit.register
def _remove_temporary_stores() -> None:
    """At interpreter exit: remove the factor stores of panels still alive (temporary folders)."""
    import shutil

    for panel in list(_LIVE):
        im = panel.im
        if im is not None and im.owns_path:   # the panel made this folder (temporary or run-N)
            _MADE.add(str(im.ms.path))
    for path in list(_MADE):
        shutil.rmtree(path, ignore_errors=True)
    _MADE.clear()


__all__ = ["InspectPanel", "class_keys"]
