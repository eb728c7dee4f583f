"""LANCET view's spot checks (a mixin of ``LancetView``, widgets/lancet_view.py): draw a few propagated
labels per confidence bin, show one at a time, store the expert's verdict (a review label, or a team
annotator's own human label, marked ``spot.MARKER``) and move on."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from ..calibration import show_confidence
from ..lancet import spot
from .item_card import UNCALIBRATED_WHY


class SpotChecks:
    """Spot-check actions for ``LancetView`` (uses its ``session``, ``per_bin``, ``checks``, ``annotator``,
    ``label_source``, ``card``, ``check_text``, the buttons, ``_queue``, ``_rng``, ``_propagated``,
    ``_calibrated``, ``_shows_percent``, ``_fitted_labels``, ``_refresh_estimate``, ``_refresh_curve``,
    ``_restorer``)."""

    # -- spot checks ---------------------------------------------------------------------------------
    def draw(self) -> list[int]:
        """Draw ``per_bin`` propagated items per confidence bin to check; shows the first. Returns their ids."""
        p = self._propagated()
        if not len(p):
            self.check_text.value = "<i>nothing propagated yet to check</i>"
            return []
        human = np.asarray(self.session.label_vector()) >= 0
        p = p[~human[p["id"].to_numpy(np.int64)]]
        d = spot.draw(p, self.per_bin, exclude=self.checks["id"].tolist(), seed=int(self._rng.integers(2**31)))
        self._queue = d.to_dict("records")
        self._show_next()
        return [int(i) for i in d["id"]]

    @property
    def current(self) -> dict | None:
        return self._queue[0] if self._queue else None

    def _show_next(self) -> None:
        self.right_class.layout.display = self.save_button.layout.display = "none"
        c = self.current
        if c is None:
            self.card.layout.display = "none"
            self.confirm_button.disabled = self.reject_button.disabled = True
            self.check_text.value = "<i>spot checks done</i>" if len(self.checks) else ""
            return
        self.card.layout.display = ""
        self.card.show(int(c["id"]))
        if self._calibrated():
            shown = show_confidence(float(c["confidence"]), self._fitted_labels() or 0) \
                if self._shows_percent() else "uncertain"
            conf = f"calibrated confidence {shown}"
        else:
            conf = f'<span title="{html.escape(UNCALIBRATED_WHY)}">uncalibrated model: no confidence shown</span>'
        self.check_text.value = (f'<div data-item="{int(c["id"])}">LANCET says <b>{html.escape(str(c["label"]))}</b>'
                                 f" ({conf}) — right? {len(self._queue)} left</div>")
        self.confirm_button.disabled = self.reject_button.disabled = False

    def _store_check(self, right: str) -> bool:
        """Write the check as a review label by this view's annotator; False (and a red line) if the store failed."""
        c = self.current
        self._own_write = True
        try:
            spot.record(self.session, int(c["id"]), right, str(c["label"]), float(c["confidence"]), self.annotator,
                        source=self.label_source)
        except Exception as e:   # nothing moves on: the check stays on screen
            self.check_text.value += (f'<div class="dcai-error" style="color:#b00020">not saved: '
                                      f"{html.escape(str(e) or repr(e))}</div>")
            return False
        finally:
            self._own_write = False
        self._writes += 1
        return True

    def _record(self, correct: bool) -> None:
        c = self._queue.pop(0)
        row = pd.DataFrame([{"id": int(c["id"]), "label": c["label"], "confidence": float(c["confidence"]),
                             "correct": bool(correct)}])
        self.checks = row if self.checks.empty else pd.concat([self.checks, row], ignore_index=True)
        self._refresh_estimate()
        self._refresh_curve()
        self._show_next()
        self._restorer.request()       # read back from the store (runs again after a read in progress)

    def confirm(self) -> None:
        """The shown propagated label is right: store it as a review label (with this view's annotator)."""
        c = self.current
        if c is None or not self._store_check(str(c["label"])):
            return
        self._record(True)

    def reject(self) -> None:
        """The shown propagated label is wrong: ask for the right class (then ``save_correction``)."""
        if self.current is None:
            return
        self.right_class.layout.display = self.save_button.layout.display = ""
        self.confirm_button.disabled = self.reject_button.disabled = True
        self.check_text.value += "<div>pick the right class and Save</div>"

    def save_correction(self, label: str | int | None = None) -> None:
        """Store the right class for the rejected item (a review label) and count it as wrong."""
        c = self.current
        if c is None:
            return
        label = self.right_class.value if label is None else label
        right = self.session.classes[int(label)] if isinstance(label, (int, np.integer)) else str(label)
        if not self._store_check(right):
            return
        self._record(right == str(c["label"]))
