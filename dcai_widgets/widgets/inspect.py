"""InspectPanel: which training items drive a prediction, and which labels look wrong (MetaStore view).

A thin view over ``dcai_widgets.metastore``: the session's small model is trained and its gradient
factors collected the first time the panel is built (in the background, with a progress bar); then a
list of validation items (misclassified first) opens the top proponents/opponents of the chosen item,
and a suspects list lets the expert relabel (``source="review"``), confirm, or exclude each item.
"""
from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as W
import numpy as np
import torch

from ..metastore.demo import InspectModel, build_inspect_model
from .item_card import ItemCard
from .item_grid import ItemGrid
from .style import style_widget

ALL = "__all__"


class InspectPanel(W.VBox):
    """Influence view over one Session: validation items, proponents/opponents, and a suspects review list.

    ``InspectPanel(session)`` starts training + factor collection in a background thread (``background=False``
    runs it in the constructor, for scripts and tests). ``show_item(id)``, ``relabel(id, label)``,
    ``confirm(id)``, ``exclude(id)`` and ``retrain()`` drive it from Python.
    """

    def __init__(self, session: Any, path: str | None = None, k: int = 8, n_suspects: int = 20,
                 background: bool = True, auto_start: bool = True, annotator: str | None = None,
                 epochs: int = 10) -> None:
        if int(k) < 1 or int(n_suspects) < 1:
            raise ValueError(f"k and n_suspects must be positive ints, got k={k!r}, n_suspects={n_suspects!r}")
        self.session = session
        self.path = path
        self.k = int(k)
        self.n_suspects = int(n_suspects)
        self.background = background
        self.annotator = annotator
        self.epochs = int(epochs)
        self.classes = [str(c) for c in session.classes]
        self.im: InspectModel | None = None
        self.current: int | None = None
        self.suspects_frame = None
        self._thread: threading.Thread | None = None
        self._filling = False
        self._runs = 0

        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="factors",
                                        layout=W.Layout(width="360px"))
        self.status = W.HTML("<i>not started</i>")
        self.layer_pick = W.Dropdown(options=[("all layers", ALL)], value=ALL, description="layer",
                                     layout=W.Layout(width="240px"))
        self.ckpt_pick = W.Dropdown(options=[("all (TracIn-CP)", ALL)], value=ALL, description="checkpoint",
                                    layout=W.Layout(width="260px"))
        self.retrain_button = W.Button(description="retrain with current labels", icon="refresh",
                                       layout=W.Layout(width="auto"))
        self.items_list = W.Select(options=[], rows=14, layout=W.Layout(width="300px"))
        self.query_card = ItemCard(session, size=112)
        self.query_info = W.HTML()
        self.pro_grid = ItemGrid(session, preselect=False, page_size=self.k, card_size=64,
                                 annotator=annotator, title="<b>proponents</b> (push toward this label)")
        self.opp_grid = ItemGrid(session, preselect=False, page_size=self.k, card_size=64,
                                 annotator=annotator, title="<b>opponents</b> (push away from it)")
        self.suspects_box = W.VBox([])
        self.suspects_status = W.HTML()
        self.layer_pick.observe(self._on_scope, names="value")
        self.ckpt_pick.observe(self._on_scope, names="value")
        self.items_list.observe(self._on_pick, names="value")
        self.retrain_button.on_click(lambda _b: self.retrain())

        toolbar = W.HBox([self.layer_pick, self.ckpt_pick, self.retrain_button, self.progress],
                         layout=W.Layout(flex_flow="row wrap", align_items="center"))
        left = W.VBox([W.HTML("<b>validation items</b> (misclassified first)"), self.items_list])
        right = W.VBox([W.HBox([self.query_card, self.query_info]), self.pro_grid, self.opp_grid],
                       layout=W.Layout(flex="1"))
        suspects = W.VBox([W.HTML("<b>suspects</b>: training items that most hurt the trusted validation "
                                  "items (likely mislabeled); relabel, confirm or exclude"),
                           self.suspects_status, self.suspects_box])
        super().__init__([style_widget(), toolbar, self.status, W.HBox([left, right]), suspects])
        self.add_class("dcai-inspect")
        if auto_start:
            self.start()

    # -- preparation -----------------------------------------------------------------------------
    def start(self) -> None:
        """Train the model and collect factors (in a thread unless ``background=False``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self.background:
            self._thread = threading.Thread(target=self._prepare, daemon=True, name="inspect-prepare")
            self._thread.start()
        else:
            self._prepare()

    def wait(self, timeout: float | None = None) -> None:
        """Block until background preparation is done (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _prepare(self) -> None:
        self.retrain_button.disabled = True
        try:
            self.progress.value = 0.0
            self.status.value = "<i>training the model on the current labels…</i>"
            self._runs += 1
            path = None if self.path is None else f"{self.path}/run-{self._runs}"
            im = build_inspect_model(self.session, path=path, epochs=self.epochs,
                                     excluded=self.session.excluded() if hasattr(self.session, "excluded") else (),
                                     progress=lambda e, n: setattr(self.progress, "value", 0.3 * e / n))
            n_ck = len(im.states)
            self.status.value = f"<i>collecting gradient factors of {len(im.train_ids)} training items…</i>"
            names = list(im.states)

            def on_progress(ck: str, done: int, total: int | None) -> None:
                frac = (names.index(ck) + (done / total if total else 1.0)) / n_ck if ck in names else 1.0
                self.progress.value = 0.3 + 0.7 * frac

            im.collect(progress=on_progress)
            self.progress.value = 1.0
            self.im = im
            self._fill()
        except Exception as e:  # shown in the panel; nothing stored is touched
            self.status.value = (f'<span class="dcai-error">could not prepare the Inspect panel: '
                                 f"{html.escape(str(e))}</span>")
        finally:
            self.retrain_button.disabled = False

    def retrain(self) -> None:
        """Retrain on the current labels and exclusions and collect factors again."""
        self.im = None
        self.current = None
        self.start()

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
        pred, conf = im.predict(im.val_ids)
        truth = im.y[im.val_ids]
        wrong = pred != truth
        order = np.lexsort((conf, ~wrong))          # misclassified first, least confident first
        self._pred = dict(zip(im.val_ids.tolist(), zip(pred.tolist(), conf.tolist())))
        opts = []
        for j in order:
            i = int(im.val_ids[j])
            mark = "✗ " if wrong[j] else ""
            opts.append((f"{mark}#{i}  {self.classes[truth[j]]} → {self.classes[pred[j]]} ({conf[j]:.2f})", i))
        self.items_list.options = opts
        self.status.value = (f"{len(im.train_ids)} training items, {len(im.val_ids)} validation items "
                             f"({int(wrong.sum())} misclassified), {len(ms.checkpoints)} checkpoints, layers "
                             f"{', '.join(ms.layers)}; {ms.storage_report()['bytes'].sum() / 2**20:.1f} MiB of factors")
        if opts:
            self.items_list.value = opts[0][1]      # triggers show_item
        self.refresh_suspects()

    # -- queries ---------------------------------------------------------------------------------
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
        pro = im.ms.proponents(x, y, k=self.k, **sc)
        opp = im.ms.opponents(x, y, k=self.k, **sc)
        self.pro_grid.set_ids(pro["id"].tolist(), pro["score"].tolist())
        self.opp_grid.set_ids(opp["id"].tolist(), opp["score"].tolist())
        pred, conf = self._pred.get(i, (None, None))
        self.query_card.show(i, note="validation")
        lab = self.classes[int(im.y[i])]
        pl = f"{self.classes[pred]} ({conf:.2f})" if pred is not None else "?"
        self.query_info.value = (f'<div class="dcai-inspect-query" data-item="{i}">label <b>{html.escape(lab)}</b>'
                                 f"<br>model says <b>{html.escape(pl)}</b><br>proponents: training items whose "
                                 "gradient steps lowered this item's loss; opponents raised it</div>")

    def refresh_suspects(self) -> None:
        """Recompute the suspects list for the chosen layer and checkpoint."""
        im = self._require()
        vx = im.X[torch.as_tensor(im.val_ids)]
        vy = torch.as_tensor(im.y[im.val_ids])
        k = min(self.n_suspects, len(im.train_ids))
        df = im.ms.suspects(vx, vy, k=k, **self._scope())
        self.suspects_frame = df
        excluded = set(self.session.excluded().tolist()) if hasattr(self.session, "excluded") else set()
        self.suspects_box.children = [self._suspect_row(int(r.id), r.score, r.label, int(r.suggested), excluded)
                                      for r in df.itertuples()]
        self.suspects_status.value = f"{len(df)} most negative of {len(im.train_ids)} training items"

    def _suspect_row(self, i: int, score: float, label: float, suggested: int, excluded: set) -> W.HBox:
        card = ItemCard(self.session, i, size=56)
        lab = self.classes[int(label)] if np.isfinite(label) else "?"
        info = W.HTML(f'<div class="dcai-suspect" data-item="{i}">label <b>{html.escape(lab)}</b> · suggested '
                      f"<b>{html.escape(self.classes[suggested])}</b><br>score {score:.3g}</div>",
                      layout=W.Layout(width="200px"))
        pick = W.Dropdown(options=self.classes, value=self.classes[suggested], layout=W.Layout(width="120px"))
        relabel = W.Button(description="relabel", button_style="primary", layout=W.Layout(width="auto"))
        confirm = W.Button(description="confirm", layout=W.Layout(width="auto"))
        exclude = W.Button(description="exclude" if i not in excluded else "include",
                           button_style="warning", layout=W.Layout(width="auto"))
        note = W.HTML("<i>excluded</i>" if i in excluded else "")
        relabel.on_click(lambda _b: self._act(note, self.relabel, i, pick.value))
        confirm.on_click(lambda _b: self._act(note, self.confirm, i))
        exclude.on_click(lambda _b: self._toggle_exclude(note, exclude, i))
        row = W.HBox([card, info, pick, relabel, confirm, exclude, note],
                     layout=W.Layout(align_items="center"))
        row.add_class("dcai-suspect-row")
        return row

    def _act(self, note: W.HTML, fn, *args) -> None:
        try:
            note.value = html.escape(fn(*args))
        except (ValueError, TypeError) as e:
            note.value = f'<span class="dcai-error">{html.escape(str(e))}</span>'

    def _toggle_exclude(self, note: W.HTML, button: W.Button, i: int) -> None:
        back = button.description == "include"
        self._act(note, self.exclude, i, not back)
        button.description = "exclude" if back else "include"

    # -- actions -----------------------------------------------------------------------------------
    def relabel(self, item_id: int, label: str | int) -> str:
        """Write a corrected label for a training item (``source="review"``)."""
        self.session.label([int(item_id)], [label], annotator=self.annotator, source="review")
        name = self.classes[int(label)] if isinstance(label, (int, np.integer)) else str(label)
        return f"relabeled as {name}"

    def confirm(self, item_id: int) -> str:
        """Record that the item's current training label was reviewed and is right (``source="review"``)."""
        im = self._require()
        lab = int(im.y[int(item_id)])
        if lab < 0:
            raise ValueError(f"item {item_id} has no training label to confirm")
        self.session.label([int(item_id)], [lab], annotator=self.annotator, source="review")
        return f"confirmed {self.classes[lab]}"

    def exclude(self, item_id: int, excluded: bool = True) -> str:
        """Keep a training item out of training (stored in the session) or bring it back."""
        self.session.exclude([int(item_id)], excluded=excluded, annotator=self.annotator,
                             reason="inspect: suspect")
        return "excluded (retrain to apply)" if excluded else "included again"

    # -- events ------------------------------------------------------------------------------------
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


__all__ = ["InspectPanel"]
