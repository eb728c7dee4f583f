"""The Inspect panel's model choice and the confidence it shows (a mixin of ``InspectPanel``).

Which model the panel inspects: its own small model (trained on the labels the user chooses) or one the
Train tab stored in ``session.models`` (``metastore.inspect_model.inspect_model_from``); the "model"
dropdown follows the session's "model" events, and a new choice supersedes the run in progress. The
confidence shown is calibrated on cross-fitted labels (``metastore.inspect_model.calibrate``) or
"uncertain" (``calibration.SHOW_PERCENT_FROM``).
"""
from __future__ import annotations

import numpy as np

from ..calibration import SHOW_PERCENT_FROM
from ..metastore.inspect_model import InspectModel, session_models

OWN = ""      # the "model" choice for the panel's own small model


class ModelChoice:
    """Model-choice behaviour for ``InspectPanel`` (uses its ``session``, ``model_pick``, ``train_pick``,
    ``_chosen_model``, ``_filling``, ``_started``, ``_job``, ``calibrate``, ``start``, ``retrain``)."""

    @staticmethod
    def _n_trusted(im: InspectModel) -> int:
        w = im.training.weight if im.training is not None else np.ones(len(im.y))
        return int((w[im.train_ids] >= 1.0).sum())

    # -- which model --------------------------------------------------------------------------------
    def _model_options(self) -> list[tuple[str, str]]:
        return [("Inspect's own small model", OWN)] + [(f"Train tab: session.models[{k!r}]", k)
                                                        for k in session_models(self.session)]

    def _on_model(self, name=None, model=None, **_kw) -> None:
        """Session "model" event (any thread): list the new model; re-inspect the chosen one when it was
        retrained."""
        self._models_changed(name)

    def _on_models_main(self, name: str | None) -> None:
        self._filling = True
        try:
            self.model_pick.options = self._model_options()
            have = [v for _d, v in self.model_pick.options]
            self.model_pick.value = self._chosen_model if self._chosen_model in have else OWN
        finally:
            self._filling = False
        if name and name == self._chosen_model and self._started:
            self.retrain()

    def _on_model_pick(self, change: dict) -> None:
        if self._filling or change["new"] == self._chosen_model:
            return
        self._chosen_model = change["new"] or OWN
        self.train_pick.disabled = bool(self._chosen_model)
        self._show_training_set()
        self._restart()

    def _restart(self) -> None:
        """A new choice supersedes the run in progress (cancelled at its next check), then runs."""
        self._job.cancel()
        self.start()

    def _confidence_note(self, im: InspectModel) -> str:
        if im.confidence is not None and im.n_calibration >= SHOW_PERCENT_FROM:
            return (f"confidence = P(label right), calibrated on out-of-fold predictions of {im.n_calibration} "
                    "labeled training items")
        why = "calibration is off" if not self.calibrate else f"fewer than {SHOW_PERCENT_FROM} labels"
        return f"confidence shown as 'uncertain' ({why})"

    def _model_text(self) -> str:
        t = session_models(self.session).get(self._chosen_model)
        if t is None:
            return f"session.models[{self._chosen_model!r}] (not there any more)"
        d = t.data_.counts
        return (f"session.models[{self._chosen_model!r}]: {len(t.train_ids_)} training + {len(t.val_ids_)} holdout "
                f"items ({d.get('labels', 0)} labels" + (f", {d['propagated']} propagated" if d.get("propagated")
                                                         else "") + ")")
