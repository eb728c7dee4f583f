"""Typed payloads of the Session's events, checked when they are emitted.

Panels and engines talk through ``Session.on(event, callback)`` / ``Session.emit(event, ...)``. Each event's
payload is one of the frozen dataclasses below; ``Session.emit`` builds it from the keyword arguments (or
takes an instance) and refuses a payload with a missing, unexpected or wrongly typed field, so a wrong
assumption about an event fails in a test instead of in a browser. Subscribers are still called as
``callback(**fields)``, so existing ``def on_labels(ids, labels, source, annotator)`` handlers keep working.
"""
from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

LABEL_SOURCES = ("human", "review", "import", "propagated")
LABELS_EVENT_SOURCES = (*LABEL_SOURCES, "undo")


class PayloadError(TypeError):
    """An event was emitted with a payload that does not match its declared type."""


def _id_list(event: str, field: str, ids: Any) -> list[int]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple)):
        raise PayloadError(f"{event!r} event: {field} must be a list of item ids (int), got {type(ids).__name__}")
    if not set(map(type, ids)) <= {int}:      # the common case, fast: ids.tolist() gives plain ints
        bad = [i for i in ids if not isinstance(i, numbers.Integral) or isinstance(i, bool)]
        if bad:
            raise PayloadError(f"{event!r} event: {field} must be ints, got {bad[:3]!r}")
        return [int(i) for i in ids]
    return ids if isinstance(ids, list) else list(ids)


def _opt_str(event: str, field: str, v: Any) -> None:
    if v is not None and not isinstance(v, str):
        raise PayloadError(f"{event!r} event: {field} must be a str or None, got {type(v).__name__} {v!r}")


@dataclass(frozen=True)
class LabelsEvent:
    """Labels were written (or retracted: ``source="undo"``) and are committed to the store.

    ``labels[i]`` is the label written for ``ids[i]``; for ``source="undo"`` it is the item's current label
    after the retraction (None where it has none left). ``annotator``: who wrote (or undid) them; None for a
    model's propagated labels or an anonymous notebook call.
    """

    event: ClassVar[str] = "labels"
    ids: list[int]
    labels: list[str | None]
    source: str
    annotator: str | None

    def __post_init__(self) -> None:
        ids = _id_list("labels", "ids", self.ids)
        object.__setattr__(self, "ids", ids)
        if isinstance(self.labels, (str, bytes)) or not isinstance(self.labels, (list, tuple)):
            raise PayloadError(f"'labels' event: labels must be a list (one per id), got {type(self.labels).__name__}")
        if len(self.labels) != len(ids):
            raise PayloadError(f"'labels' event: {len(self.labels)} labels for {len(ids)} ids")
        allow_none = self.source == "undo"
        ok = (str, type(None)) if allow_none else str
        bad = [] if set(map(type, self.labels)) <= {str} else [v for v in self.labels if not isinstance(v, ok)]
        if bad:
            raise PayloadError(f"'labels' event: labels must be class names (str{' or None' if allow_none else ''}), "
                               f"got {bad[:3]!r}")
        if self.source not in LABELS_EVENT_SOURCES:
            raise PayloadError(f"'labels' event: source must be one of {LABELS_EVENT_SOURCES}, got {self.source!r}")
        _opt_str("labels", "annotator", self.annotator)


@dataclass(frozen=True)
class ModelEvent:
    """A model was stored under ``name`` in ``Session.models`` (``Session.set_model``)."""

    event: ClassVar[str] = "model"
    name: str
    model: Any

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PayloadError(f"'model' event: name must be a non-empty str, got {self.name!r}")


@dataclass(frozen=True)
class ExclusionsEvent:
    """Items were excluded from training (``excluded=True``) or brought back; committed to the store."""

    event: ClassVar[str] = "exclusions"
    ids: list[int]
    excluded: bool
    annotator: str | None
    reason: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", _id_list("exclusions", "ids", self.ids))
        if not isinstance(self.excluded, bool):
            raise PayloadError(f"'exclusions' event: excluded must be a bool, got {self.excluded!r}")
        _opt_str("exclusions", "annotator", self.annotator)
        _opt_str("exclusions", "reason", self.reason)


@dataclass(frozen=True)
class TeamFitEvent:
    """This page adopted the queue fit another page of the team published (``dcai_widgets.team.TeamFit``):
    that fit's propagated labels are in the store, and this page's own engine is older. ``state``: the
    published payload (``n_labeled``, ``by``, ``version``, ``stop`` when the engine has a stop rule, ...)."""

    event: ClassVar[str] = "team_fit"
    state: dict

    def __post_init__(self) -> None:
        if not isinstance(self.state, dict):
            raise PayloadError(f"'team_fit' event: state must be a dict (the published fit), got {type(self.state).__name__}")


EVENT_TYPES: dict[str, type] = {"labels": LabelsEvent, "model": ModelEvent, "exclusions": ExclusionsEvent,
                                "team_fit": TeamFitEvent}


def register_event(cls: type) -> type:
    """Declare a new event (a frozen dataclass with an ``event`` ClassVar naming it and checks in
    ``__post_init__``); usable as a class decorator. Re-registering a name with another class is refused."""
    name = getattr(cls, "event", None)
    if not isinstance(name, str) or not dataclasses.is_dataclass(cls):
        raise TypeError("an event type is a dataclass with a str ClassVar `event`")
    if EVENT_TYPES.get(name, cls) is not cls:
        raise ValueError(f"event {name!r} is already declared by {EVENT_TYPES[name].__name__}")
    EVENT_TYPES[name] = cls
    return cls


def fields_of(payload: Any) -> dict[str, Any]:
    """The keyword arguments subscribers are called with (field values, not copies)."""
    return {f.name: getattr(payload, f.name) for f in dataclasses.fields(payload)}


def build(event: str, payload: Any = None, kwargs: Mapping[str, Any] | None = None) -> Any:
    """The typed payload of ``event`` from an instance or from keyword arguments; PayloadError if it does not fit."""
    cls = EVENT_TYPES.get(event)
    if cls is None:
        raise ValueError(f"unknown event {event!r}; expected one of {tuple(EVENT_TYPES)}")
    if payload is not None:
        if kwargs:
            raise PayloadError(f"{event!r} event: give a payload object or keyword arguments, not both")
        if not isinstance(payload, cls):
            raise PayloadError(f"{event!r} event takes a {cls.__name__}, got {type(payload).__name__}")
        return payload
    kw = dict(kwargs or {})
    expected = {f.name for f in dataclasses.fields(cls)}
    missing, extra = sorted(expected - set(kw)), sorted(set(kw) - expected)
    if missing or extra:
        raise PayloadError(f"{event!r} event payload has fields {sorted(expected)}; "
                           + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                                   f"unexpected {extra}" if extra else "") if p))
    return cls(**kw)
