"""The Label panel's audit of shown confidences, kept in the label store so a reload resumes it.

The audit (``calibration.SuggestionAudit``) decides whether a suggestion's percentage is shown. It judges
the last suggestions shown against the labels people gave. It lived only in the page: after a reload, every
percentage read "uncertain — 0 of 20 suggestions checked since this page opened" until 20 more were
labeled (found on an expert's day, issue 14). Its records now go to the store per annotator, written off
the keypress path and coalesced. A lost write only costs a few records, never a label.
"""
from __future__ import annotations

import logging
from typing import Any

from ..calibration import SuggestionAudit
from .threads import Background, Job

log = logging.getLogger(__name__)


class AuditKeeper:
    """Load an annotator's audit from ``session.store`` and save it after each record (coalesced, in the
    background). A session without a store that can ``publish`` keeps the audit in the page only."""

    def __init__(self, session: Any, annotator: str, background: bool = True) -> None:
        self.store = getattr(session, "store", None)
        self.key = f"audit:{annotator}"
        self._state: dict | None = None
        self._saver = Background(self._save, on_error=self._failed, name="dcai-audit-save", background=background)

    @property
    def stored(self) -> bool:
        return self.store is not None and hasattr(self.store, "publish") and hasattr(self.store, "published")

    def load(self, audit: SuggestionAudit) -> SuggestionAudit:
        """``audit`` with the records stored for this annotator (unchanged when there are none or they
        cannot be read: the audit then starts empty, as before)."""
        if not self.stored:
            return audit
        try:
            state = self.store.published(self.key)
            return audit.restore(state) if state else audit
        except Exception as e:   # an unreadable record must not stop the page from opening
            log.warning("could not restore the suggestion audit %r: %s", self.key, e)
            return audit

    def save(self, audit: SuggestionAudit) -> None:
        """Store ``audit``'s records soon (the snapshot is taken now, on the caller's thread)."""
        if self.stored:
            self._state = audit.state()
            self._saver.request()

    def _save(self, job: Job) -> None:
        state = self._state
        if state is not None:
            self.store.publish(self.key, state)

    def _failed(self, e: BaseException) -> None:
        log.warning("could not store the suggestion audit %r: %s", self.key, e)
