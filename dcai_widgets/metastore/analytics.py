"""Questions answered from an influence store: proponents/opponents of a prediction, and which training
labels look wrong (``suspects``), from several signals and their rank average.

This module imports nothing of the store: it works on anything with the small public interface
``InfluenceSource`` (``MetaStore`` has it), so the store and its analytics do not import each other.

Signals (each a *suspicion*: higher = more likely mislabeled), by name:

``"class"``   class-wise P2B against trusted validation data: the most negative TracIn-CP inner product of
              the item's gradient with one validation class's mean gradient (Pruthi et al. 2020). Strong
              when validation data is plentiful and the model's gradients separate classes (MNIST CNN);
              weak on small heads over frozen embeddings, where gradients of all items look alike.
``"batch"``   the same against the whole validation batch (one mean gradient; dilutes a class-specific harm).
``"self"``    TracIn-CP self-influence ``sum_c lr_c ||grad_i||^2``: large for items the model keeps fighting.
              Needs no validation data; also large for rare but correct items.
``"margin"``  area under the margin (Pleiss et al. 2020, AUM): the logit of the item's label minus the largest
              other logit, averaged over the stored checkpoints (low = suspicious). Needs the training
              inputs (``train_x``); no validation data. The model must not have memorised the noise
              (checkpoints from the early epochs of training, as TracIn-CP stores).
``"knn"``     disagreement with the k nearest neighbours' labels (cosine, in the input of the model's last
              stored Linear layer at the last checkpoint; Bahri et al. 2020, "deep kNN"). Needs ``train_x``.
              Robust where the representation clusters classes well; blind to flips between neighbours.

A tuple of names ranks every item under each signal and averages the ranks (rank averaging; no scale to
tune). ``DEFAULT_SIGNALS`` = margin + kNN was chosen on the eight settings of ``benchmarks/mislabel.py``
(CNN on MNIST pixels, MLPs on digits, CIFAR-10 ResNet and MiniLM text embeddings; uniform and
class-conditional flips; 5% and 20%): it had the best mean precision@k of all 31 combinations (0.829 vs
cleanlab ``find_label_issues`` 0.691) and was at or above cleanlab in every setting; chosen leaving each
setting out in turn it is picked every time (see benchmarks/RESULTS.md, "Mislabel detection"). Without
training inputs the best there was class + self (mean 0.723; "self" alone 0.675, "class" 0.653, "batch"
0.594): ``FALLBACK_SIGNALS``, or "self" alone when there is no validation data either.

Which to use when: the default (``by="auto"``, with ``train_x``) whenever the training inputs are at hand;
``"knn"`` alone when the model is under-trained (its representation still clusters classes: the best single
signal on the CNN with 20% paired flips); ``"class"`` when the question is "which items hurt this class of
trusted data" (its suggestion is the class hurt most); class + self (what "auto" picks) when the inputs
are not at hand; ``"self"`` when neither inputs nor validation data exist.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ContextManager, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["DEFAULT_SIGNALS", "FALLBACK_SIGNALS", "SIGNALS", "InfluenceSource", "combine", "ranked", "resolve", "signals", "suspects"]

SIGNALS = ("class", "batch", "self", "margin", "knn")
#: the default ``by`` of ``suspects`` (chosen on evidence across the benchmark's settings)
DEFAULT_SIGNALS: tuple[str, ...] = ("margin", "knn")
#: used by "auto" when no default signal can be computed (no training inputs given)
FALLBACK_SIGNALS: tuple[str, ...] = ("class", "self")
_NEEDS_VAL = {"class", "batch"}
_NEEDS_X = {"margin", "knn"}


@runtime_checkable
class InfluenceSource(Protocol):
    """What the analytics need of a store of per-sample gradients (``MetaStore`` provides it)."""

    model: nn.Module

    @property
    def checkpoints(self) -> list[str]: ...
    @property
    def layers(self) -> list[str]: ...
    def stored_ids(self, checkpoint: Any = None, layers: Any = None) -> np.ndarray: ...
    def labels(self, ids: Sequence[int] | None = None) -> pd.Series: ...
    def p2p(self, train_ids, test_x, test_y, checkpoint=None, layers=None, _with_ids: bool = False) -> Any: ...
    def p2b(self, train_ids, test_x, test_y, checkpoint=None, layers=None, _with_ids: bool = False) -> Any: ...
    def class_p2b(self, val_x, val_y, ids=None, checkpoint=None, layers=None
                  ) -> tuple[np.ndarray, np.ndarray, list[int]]: ...
    def self_influence(self, ids=None, checkpoint=None, layers=None) -> np.ndarray: ...
    def at(self, checkpoint: str) -> ContextManager[None]: ...


def ranked(src: InfluenceSource, x: Any, y: Any, k: int, checkpoint=None, layers=None,
           positive: bool = True) -> pd.DataFrame:
    """Top-k training items by TracIn-CP score for one test item (most positive or most negative)."""
    if int(k) < 1:
        raise ValueError(f"k={k!r}: ask for at least one item")
    ids, scores = src.p2p(None, x, y, checkpoint, layers, _with_ids=True)
    if scores.shape[1] != 1:
        raise ValueError(f"proponents/opponents take one test item; got {scores.shape[1]} (use p2p for a batch)")
    s = scores[:, 0]
    order = np.argsort(-s if positive else s, kind="stable")[: int(k)]
    return pd.DataFrame({"id": ids[order], "score": s[order], "label": src.labels(ids[order]).to_numpy()})


# -- inputs -------------------------------------------------------------------------------------------
def resolve(by: str | Sequence[str], has_val: bool = True, has_x: bool = True) -> tuple[str, ...]:
    """Signal names for ``by``: a name, a tuple of names, "combined" (= ``DEFAULT_SIGNALS``) or "auto"
    (``DEFAULT_SIGNALS`` less those whose inputs were not given: validation data, training inputs; when
    none is left, ``FALLBACK_SIGNALS``)."""
    names = (by,) if isinstance(by, str) else tuple(by)
    if names == ("combined",):
        names = DEFAULT_SIGNALS
    elif names == ("auto",):
        names = tuple(n for n in DEFAULT_SIGNALS if (has_val or n not in _NEEDS_VAL) and (has_x or n not in _NEEDS_X))
        if not names:
            names = FALLBACK_SIGNALS if has_val else ("self",)
    bad = [n for n in names if n not in SIGNALS]
    if not names or bad:
        raise ValueError(f"by={by!r}: use one of {list(SIGNALS)}, 'auto', 'combined' (= {list(DEFAULT_SIGNALS)}), "
                         "or a tuple of these names to average their ranks")
    return names


def _n_outputs(src: InfluenceSource, x: torch.Tensor) -> int:
    with torch.no_grad(), src.at(src.checkpoints[-1]):
        return int(src.model(x[:1]).shape[1])


def _as_x(src: InfluenceSource, x: Any) -> torch.Tensor:
    p = next(src.model.parameters(), None)
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    return t.to(p.dtype) if p is not None and t.is_floating_point() else t


def _check_val(src: InfluenceSource, val_x: Any, val_y: Any) -> None:
    if val_x is None or val_y is None:
        raise ValueError("signals 'class' and 'batch' need trusted validation data: pass val_x and val_y")
    yv = np.asarray(val_y.cpu() if torch.is_tensor(val_y) else val_y).reshape(-1)
    if len(yv) == 0:
        raise ValueError("val_y is empty: give at least one trusted validation item per class you care about")
    if not np.issubdtype(yv.dtype, np.integer) and not np.all(np.equal(np.mod(yv, 1), 0)):
        raise ValueError("val_y must hold class indices (integers)")
    C = _n_outputs(src, _as_x(src, val_x))
    out = sorted({int(v) for v in yv if v < 0 or v >= C})
    if out:
        raise ValueError(f"validation labels {out[:5]} are outside the model's classes 0..{C - 1}; map the "
                         "validation labels to the class indices the model was trained with")


def _train_inputs(train_x: Any, ids: np.ndarray, src: InfluenceSource) -> torch.Tensor:
    if train_x is None:
        raise ValueError("signals 'margin' and 'knn' need the training inputs: pass train_x (row i = the input "
                         "of stored item id i)")
    X = _as_x(src, train_x)
    if len(ids) and int(ids.max()) >= len(X):
        raise ValueError(f"train_x has {len(X)} rows but stored ids go up to {int(ids.max())}; row i of "
                         "train_x must be the input of item id i")
    return X[torch.as_tensor(ids)]


def _logits(src: InfluenceSource, X: torch.Tensor, checkpoint: str, bs: int = 1024) -> torch.Tensor:
    with torch.no_grad(), src.at(checkpoint):
        return torch.cat([src.model(X[s:s + bs]) for s in range(0, len(X), bs)]).double()


def _features(src: InfluenceSource, X: torch.Tensor, checkpoint: str, bs: int = 1024) -> torch.Tensor:
    """Inputs of the model's last stored Linear layer (its representation of the items)."""
    mods = dict(src.model.named_modules())
    lin = [m for n, m in mods.items() if isinstance(m, nn.Linear) and n in src.layers]
    lin = lin or [m for m in mods.values() if isinstance(m, nn.Linear)]
    if not lin:
        raise ValueError("signal 'knn' needs a Linear layer in the model (its input is the representation)")
    grab: list[torch.Tensor] = []
    h = lin[-1].register_forward_hook(lambda _m, a, _o: grab.append(a[0].detach().reshape(len(a[0]), -1)))
    try:
        _logits(src, X, checkpoint, bs)
    finally:
        h.remove()
    return torch.cat(grab).double()


# -- signals ------------------------------------------------------------------------------------------
def _margin(src, X, lab, ckpts) -> tuple[np.ndarray, np.ndarray]:
    """(suspicion = -AUM, mean logits) over checkpoints."""
    acc = None
    for ck in ckpts:
        z = _logits(src, X, ck)
        acc = z if acc is None else acc + z
    z = acc / len(ckpts)
    own = z.gather(1, torch.as_tensor(lab)[:, None]).squeeze(1)
    other = z.clone()
    other.scatter_(1, torch.as_tensor(lab)[:, None], -np.inf)
    return (other.max(1).values - own).numpy(), z.numpy()


def _knn(src, X, lab, ckpt, k: int = 10) -> np.ndarray:
    """Similarity-weighted share of the k nearest neighbours (cosine) whose label differs."""
    F = _features(src, X, ckpt)
    F = F / F.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = len(F)
    k = max(1, min(int(k), n - 1))
    if n < 2:
        return np.zeros(n)
    lab_t = torch.as_tensor(lab)
    out = torch.empty(n, dtype=torch.float64)
    for s in range(0, n, 512):
        sim = F[s:s + 512] @ F.T
        sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])] = -np.inf   # not itself
        v, j = sim.topk(k, dim=1)
        w = (v + 1.0).clamp_min(1e-6)                                                   # cosine -> (0, 2]
        differ = (lab_t[j] != lab_t[s:s + 512, None]).double()
        out[s:s + 512] = (w * differ).sum(1) / w.sum(1)
    return out.numpy()


def signals(src: InfluenceSource, names: Sequence[str] = DEFAULT_SIGNALS, val_x: Any = None, val_y: Any = None,
            train_x: Any = None, checkpoint=None, layers=None, ids: Sequence[int] | None = None) -> pd.DataFrame:
    """DataFrame ``id`` + one suspicion column per signal (higher = more likely mislabeled) for stored items.

    Also returns (in ``.attrs``) what ``suspects`` needs for the suggested class. See the module docstring
    for what each signal measures and needs.
    """
    names = resolve(names, val_x is not None and val_y is not None, train_x is not None)
    ckpts = src.checkpoints if checkpoint is None else ([checkpoint] if isinstance(checkpoint, str)
                                                        else list(checkpoint))
    if not src.checkpoints:
        raise ValueError("the store is empty: nothing collected yet (call ms.collect(...) first)")
    all_ids = src.stored_ids(checkpoint, layers) if ids is None else np.asarray(ids, np.int64)
    if len(all_ids) == 0:
        raise ValueError("the store holds no items for these layers/checkpoints; collect first")
    lab_f = src.labels(all_ids).to_numpy()
    cols: dict[str, np.ndarray] = {"id": all_ids}
    attrs: dict[str, Any] = {}
    if _NEEDS_VAL & set(names):
        _check_val(src, val_x, val_y)
    if "class" in names or "batch" in names:
        if "class" in names:
            _, pc, cls = src.class_p2b(val_x, val_y, all_ids, checkpoint, layers)
            cols["class"] = -pc.min(1)
            attrs["class_p2b"], attrs["classes"] = pc, cls
        if "batch" in names:
            cols["batch"] = -np.asarray(src.p2b(all_ids, val_x, val_y, checkpoint, layers))
    if "self" in names:
        cols["self"] = np.asarray(src.self_influence(all_ids, checkpoint, layers))
    if _NEEDS_X & set(names):
        if not np.all(np.isfinite(lab_f)):
            raise ValueError("some stored items have no label (collected with y=None); 'margin'/'knn' need labels")
        lab = lab_f.astype(np.int64)
        X = _train_inputs(train_x, all_ids, src)
        if "margin" in names:
            cols["margin"], attrs["logits"] = _margin(src, X, lab, ckpts)
        if "knn" in names:
            cols["knn"] = _knn(src, X, lab, ckpts[-1])
    df = pd.DataFrame(cols)
    df.attrs.update(attrs)
    return df


def combine(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """Rank average of the named suspicion columns, in (0, 1] (1 = most suspicious under every signal)."""
    names = list(names)
    if len(names) == 1:
        return frame[names[0]].to_numpy(dtype=float)
    return np.mean([frame[n].rank(method="average", pct=True).to_numpy() for n in names], axis=0)


def suspects(src: InfluenceSource, val_x: Any = None, val_y: Any = None, k: int = 50, checkpoint=None,
             layers=None, classes: Sequence[str] | None = None, by: str | Sequence[str] = "auto",
             train_x: Any = None) -> pd.DataFrame:
    """The ``k`` training items most likely mislabeled: DataFrame id, score, label, suggested.

    ``by`` names a signal or a tuple of signals whose ranks are averaged (module docstring); ``"combined"``
    is ``DEFAULT_SIGNALS``; the default ``"auto"`` is ``DEFAULT_SIGNALS`` less the signals whose inputs were
    not given (without ``train_x`` no "margin"/"knn"), or ``FALLBACK_SIGNALS`` when none is left ("self"
    alone without validation data). ``score`` is the suspicion (higher = more suspect; for one signal
    its own value: ``by="class"`` gives minus the most negative class-wise P2B), rows most suspect first.
    ``suggested`` is the class the item most likely belongs to: the validation class its gradient hurts
    most when class-wise P2B is computed, else the model's top other class (logits averaged over
    checkpoints), never the label it already has.

    Which to use when: see the module docstring (in short: pass ``train_x`` and keep the default).
    """
    names = resolve(by, val_x is not None and val_y is not None, train_x is not None)
    if int(k) < 1:
        raise ValueError(f"k={k!r}: ask for at least one suspect")
    frame = signals(src, names, val_x, val_y, train_x, checkpoint, layers)
    n = len(frame)
    if int(k) > n:
        raise ValueError(f"k={k} but the store holds only {n} items for these layers/checkpoints; ask for k <= {n}")
    score = combine(frame, names)
    order = np.argsort(-score, kind="stable")[: int(k)]
    sid = frame["id"].to_numpy()[order]
    label = src.labels(sid).to_numpy()
    if "class_p2b" in frame.attrs:
        harm, cls = frame.attrs["class_p2b"][order].copy(), list(frame.attrs["classes"])
    elif "logits" in frame.attrs:
        harm = -frame.attrs["logits"][order].copy()
        cls = list(range(harm.shape[1]))
    else:
        if val_x is None or val_y is None:
            X = _train_inputs(train_x, sid, src) if train_x is not None else None
            if X is None:
                raise ValueError("a suggested class needs validation data (val_x, val_y) or train_x")
            harm = -_logits(src, X, src.checkpoints[-1] if checkpoint is None else
                            ([checkpoint] if isinstance(checkpoint, str) else list(checkpoint))[-1]).numpy()
            cls = list(range(harm.shape[1]))
        else:
            _check_val(src, val_x, val_y)
            _, harm, cls = src.class_p2b(val_x, val_y, sid, checkpoint, layers)
            harm = harm.copy()
    for row, lab in enumerate(label):
        if np.isfinite(lab) and int(lab) in cls:
            harm[row, cls.index(int(lab))] = np.inf  # never suggest the label it already has
    suggested = np.asarray(cls)[np.argmin(harm, axis=1)]
    df = pd.DataFrame({"id": sid, "score": score[order], "label": label, "suggested": suggested})
    if classes is not None:
        names_ = list(classes)
        df["label"] = [names_[int(v)] if np.isfinite(v) else None for v in df["label"]]
        df["suggested"] = [names_[int(v)] for v in df["suggested"]]
    return df

