"""The seams between Session, engines, panels and the label store, written down as Protocols.

DESIGN.md asks that "what an engine needs of a Session" and "what a panel needs of a queue" be explicit so
that a wrong assumption fails in a test. These Protocols are that list; ``Session`` satisfies
``PanelSession`` (and so ``EngineSession``), ``UncertaintyQueue``/``Lancet``/``SharedQueue`` satisfy
``LabelQueue``, and both label store backends satisfy ``LabelStoreLike``. ``missing_members(obj, proto)``
checks an object without evaluating its properties (``isinstance`` on a runtime-checkable Protocol reads
every attribute on Python 3.11, which would compute a Session's embeddings and map).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class EngineSession(Protocol):
    """What an engine (LANCET, SEALS, MetaStore, queues, simulate) may use of a Session."""

    classes: list[str]
    y_true: np.ndarray | None

    @property
    def embeddings(self) -> np.ndarray: ...

    @property
    def index(self) -> Any: ...

    def __len__(self) -> int: ...

    def label(self, ids: Any, labels: Any, annotator: str | None = None, source: str = "human", *,
              claimed: bool = False) -> int: ...

    def label_vector(self, sources: Sequence[str] = ...) -> np.ndarray: ...

    def labeled(self, sources: Sequence[str] = ..., ids: Sequence[int] | None = None) -> pd.DataFrame: ...

    def excluded(self) -> np.ndarray: ...

    def neighbors(self, ids_or_vectors: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]: ...

    def knn_table(self, k: int) -> np.ndarray: ...

    def set_propagated(self, ids: Any, labels: Any, confidence: Any, model_version: str | None = None) -> int: ...

    def set_model(self, name: str, model: Any) -> None: ...

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]: ...


@runtime_checkable
class PanelSession(EngineSession, Protocol):
    """What a panel may use of a Session, beyond what engines use."""

    items: Any
    store: Any
    models: dict[str, Any]

    @property
    def map(self) -> np.ndarray: ...

    def undo(self, annotator: str | None = None) -> pd.DataFrame | None: ...

    def propagated(self, ids: Sequence[int] | None = None) -> pd.DataFrame: ...

    def current_labels(self) -> pd.DataFrame: ...

    def counts(self) -> Any: ...

    def exclude(self, ids: Any, excluded: bool = True, annotator: str | None = None,
                reason: str | None = None) -> None: ...

    def export(self, path: Any, format: str | None = None) -> Any: ...

    def off(self, event: str, callback: Callable[..., Any]) -> None: ...

    def emit(self, event: str, payload: Any = None, /, **fields: Any) -> None: ...


@runtime_checkable
class LabelQueue(Protocol):
    """What the Label panel needs of a queue (``UncertaintyQueue``, ``Lancet``, ``team.SharedQueue``)."""

    def fit(self) -> LabelQueue: ...

    def candidates(self, n: int | None = None) -> list[int]: ...


@runtime_checkable
class SuggestingQueue(LabelQueue, Protocol):
    """A queue that also offers a label to accept (``a``) or reject (``x``) for an item."""

    def suggest(self, item_id: int) -> tuple[str, float] | None: ...


@runtime_checkable
class LabelStoreLike(Protocol):
    """What the Session needs of a label store (SQLite ``LabelStore`` or the PostgreSQL one)."""

    def bind(self, fingerprint: str, n_items: int, classes: Sequence[str]) -> None: ...

    def append(self, items: Iterable[int], labels: Iterable[str], *, annotator: str | None = None,
               source: str = "human", confidence: Iterable[float] | None = None,
               model_version: str | None = None) -> int: ...

    def append_bulk(self, items: Sequence[int], labels: Sequence[str], *, rows: int = 5_000,
                    annotator: str | None = None, source: str = "propagated",
                    confidence: Sequence[float] | None = None, model_version: str | None = None) -> int: ...

    def undo(self, annotator: str | None = None, sources: Sequence[str] = ...) -> pd.DataFrame: ...

    def current(self, sources: Sequence[str] = ..., ids: Iterable[int] | None = None) -> pd.DataFrame: ...

    def events(self, sources: Sequence[str] = ..., include_retracted: bool = False) -> pd.DataFrame: ...

    def set_excluded(self, items: Iterable[int], excluded: bool = True, *, annotator: str | None = None,
                     reason: str | None = None) -> None: ...

    def excluded(self) -> list[int]: ...


def protocol_members(proto: type) -> list[str]:
    """The attribute names a Protocol declares (its own and its bases', not object's)."""
    names: set[str] = set()
    for base in proto.__mro__:
        if base in (object, Protocol, Any) or base.__name__ in ("Protocol", "Generic"):
            continue
        names |= {n for n in vars(base) if not n.startswith("_") or n == "__len__"}
        names |= set(getattr(base, "__annotations__", {}))
    return sorted(n for n in names if n not in {"_is_protocol", "_is_runtime_protocol"})


def missing_members(obj: Any, proto: type) -> list[str]:
    """Members of ``proto`` that ``obj`` lacks, or whose call signature cannot take the Protocol's calls.

    Properties are looked up statically (never evaluated). For methods, every parameter the Protocol
    declares must be accepted by the object's method under the same name and kind, and a parameter with a
    default in the Protocol must have one in the object too (callers may leave it out)."""
    out = []
    for name in protocol_members(proto):
        try:
            inspect.getattr_static(obj, name)
        except AttributeError:
            # instance attributes set in __init__ are found on the object itself
            if name not in getattr(obj, "__dict__", {}):
                out.append(name)
            continue
        want = inspect.getattr_static(proto, name, None)
        if callable(want) and not isinstance(want, property) and callable(getattr(obj, name, None)):
            problem = signature_problem(getattr(obj, name), want)
            if problem:
                out.append(f"{name}: {problem}")
    return out


def signature_problem(impl: Callable[..., Any], spec: Callable[..., Any]) -> str | None:
    """Why ``impl`` cannot be called the way ``spec`` (a Protocol method) may be called, or None."""
    try:
        got = inspect.signature(impl)
        exp = inspect.signature(spec)
    except (TypeError, ValueError):
        return None
    params = list(exp.parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    have = got.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in have.values())
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in have.values())
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            if not any(q.kind is p.kind for q in have.values()):
                return f"takes no {'*args' if p.kind is p.VAR_POSITIONAL else '**kwargs'}"
            continue
        q = have.get(p.name)
        if q is None:
            if p.kind is p.POSITIONAL_ONLY and var_pos:
                continue
            if p.kind is p.POSITIONAL_ONLY:
                idx = params.index(p)
                pos = [x for x in have.values() if x.kind in (x.POSITIONAL_ONLY, x.POSITIONAL_OR_KEYWORD)]
                if idx < len(pos):
                    continue
            if not (var_kw and p.kind is not p.POSITIONAL_ONLY):
                return f"has no parameter {p.name!r}"
            continue
        if p.kind is p.KEYWORD_ONLY and q.kind not in (q.KEYWORD_ONLY, q.POSITIONAL_OR_KEYWORD):
            return f"parameter {p.name!r} cannot be passed by keyword"
        if p.kind is p.POSITIONAL_OR_KEYWORD and q.kind is not q.POSITIONAL_OR_KEYWORD:
            return f"parameter {p.name!r} must be positional-or-keyword"
        if p.default is not p.empty and q.default is q.empty:
            return f"parameter {p.name!r} needs a default (callers may leave it out)"
    extra = [q.name for q in have.values() if q.default is q.empty
             and q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY) and q.name not in exp.parameters]
    if extra:
        return f"requires {extra} that callers of the Protocol do not pass"
    return None
