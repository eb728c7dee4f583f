"""Agreement and quality of a team of annotators, from the label store's events.

Everything here is computed by maintained implementations, not hand-written statistics:
Cohen's kappa per pair of annotators (scikit-learn, Cohen 1960), Krippendorff's alpha over the whole
team (the `krippendorff` package, Krippendorff 2004: any number of annotators, missing labels allowed),
Fleiss' kappa for each group of items labeled by the same number of annotators (statsmodels' ``fleiss_kappa``,
Fleiss 1971, which needs that fixed number),
and consensus labels with annotator quality from CROWDLAB (`cleanlab.multiannotator
.get_label_quality_multiannotator`, Goh, Tkachenko & Mueller 2022), which weighs each annotator by how
often they agree with the others and with a model. That model's probabilities are out-of-fold
predictions of a logistic regression on the session's embeddings, trained on the majority-vote labels
(CROWDLAB needs held-out probabilities; a model scoring its own training labels would agree with them
by construction).

Only people's labels count ("human" events, each annotator's latest per item); a lead's "review" label
is the resolution of a conflict, kept apart, and resolved items leave the conflict list.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ACTIVE_GAP_S = 300.0   # a pause longer than this between two labels ends an active session


@dataclass
class TeamReport:
    """What the Team tab and the Review view show; every figure is computed from the store's events."""

    annotators: pd.DataFrame          # annotator, items, labels, active_h, labels_per_h, agree_model,
    #                                   agree_propagated, quality
    kappa: pd.DataFrame               # annotator x annotator Cohen's kappa (NaN: too few shared items)
    shared: pd.DataFrame              # annotator x annotator number of items both labeled
    alpha: float                      # Krippendorff's alpha (nominal) over items with >= 2 annotators
    items: pd.DataFrame               # per labeled item: id, labels, consensus, agreement (share of its
    #                                   annotators giving the majority label), quality (CROWDLAB), n
    conflicts: pd.DataFrame           # items to review, worst first (subset of `items`, unresolved)
    notes: list[str] = field(default_factory=list)   # why a figure is missing
    fleiss: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["raters", "items", "kappa"]))
    #                                   Fleiss' kappa per group of items with the same number of annotators


def label_matrix(events: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Items x annotators of class indices (NaN where an annotator did not label the item), from the
    live "human" events: each annotator's latest label per item. Index: item id, sorted."""
    ev = events[(events["source"] == "human") & events["annotator"].notna()]
    if ev.empty:
        return pd.DataFrame(dtype=float)
    last = ev.sort_values("seq").groupby(["id", "annotator"]).tail(1)
    lookup = {c: i for i, c in enumerate(classes)}
    last = last.assign(k=last["label"].map(lookup))
    last = last[last["k"].notna()]
    m = last.pivot(index="id", columns="annotator", values="k").astype(float).sort_index()
    m.columns = [str(c) for c in m.columns]
    return m


def annotator_activity(events: pd.DataFrame, gap_s: float = ACTIVE_GAP_S) -> pd.DataFrame:
    """Per annotator: items labeled, label events, active hours and labels per active hour.

    Active time is the sum of the intervals between an annotator's consecutive labels that are at most
    ``gap_s`` long (a longer pause is a break, not work), and the rate is those intervals' count over
    their total time, so breaks and the first label of a session do not distort it. NaN when an
    annotator has no two labels within ``gap_s`` of each other."""
    ev = events[(events["source"].isin(["human", "review"])) & events["annotator"].notna()]
    rows = []
    for name, g in ev.groupby("annotator"):
        ts = np.sort(g["ts"].to_numpy(dtype=float))
        d = np.diff(ts)
        d = d[d <= gap_s]
        active = float(d.sum())
        rate = float(len(d) / active * 3600.0) if active > 0 else float("nan")
        rows.append((str(name), int(g["id"].nunique()), int(len(g)), active / 3600.0, rate))
    return pd.DataFrame(rows, columns=["annotator", "items", "labels", "active_h", "labels_per_h"])


def pairwise_kappa(matrix: pd.DataFrame, min_shared: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cohen's kappa for every pair of annotators over the items both labeled (scikit-learn), and the
    number of those items. NaN below ``min_shared`` shared items; 1.0 on the diagonal."""
    from sklearn.metrics import cohen_kappa_score

    names = list(matrix.columns)
    kappa = pd.DataFrame(np.nan, index=names, columns=names)
    shared = pd.DataFrame(0, index=names, columns=names)
    for a_i, a in enumerate(names):
        kappa.loc[a, a] = 1.0
        shared.loc[a, a] = int(matrix[a].notna().sum())
        for b in names[a_i + 1:]:
            both = matrix[[a, b]].dropna()
            shared.loc[a, b] = shared.loc[b, a] = len(both)
            if len(both) < min_shared:
                continue
            ya, yb = both[a].astype(int).to_numpy(), both[b].astype(int).to_numpy()
            if (ya == yb).all():
                k = 1.0   # sklearn gives NaN when both used one single class; they agreed on every item
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    k = float(cohen_kappa_score(ya, yb))
            kappa.loc[a, b] = kappa.loc[b, a] = k
    return kappa, shared


def krippendorff_alpha(matrix: pd.DataFrame) -> float:
    """Krippendorff's alpha (nominal) of the team, over items with at least two labels; NaN when no
    item has two labels or only one value was ever used (alpha is undefined then)."""
    import krippendorff

    multi = matrix[matrix.notna().sum(axis=1) >= 2]
    values = multi.stack()
    if multi.empty or values.nunique() < 2:
        return float("nan")
    return float(krippendorff.alpha(reliability_data=multi.T.to_numpy(dtype=float),
                                    level_of_measurement="nominal"))


def fleiss_by_group(matrix: pd.DataFrame, n_classes: int | None = None) -> pd.DataFrame:
    """Fleiss' kappa (statsmodels, Fleiss 1971) for each group of items labeled by the same number k >= 2
    of annotators (Fleiss' kappa assumes every item has k ratings; which annotators gave them may vary).
    Columns: raters (k), items, kappa; kappa is NaN where only one class was used in the group (chance
    agreement is then 1 and kappa undefined). Sorted by k."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    out = []
    if matrix.empty:
        return pd.DataFrame(out, columns=["raters", "items", "kappa"])
    counts = matrix.notna().sum(axis=1)
    vals = matrix.to_numpy(dtype=float)
    for k in sorted(int(c) for c in counts.unique() if c >= 2):
        rows = vals[(counts == k).to_numpy()]
        data = np.stack([r[np.isfinite(r)] for r in rows]).astype(int)      # items x k class indices
        if len(np.unique(data)) < 2:
            kappa = float("nan")
        else:
            table, _ = aggregate_raters(data, n_cat=n_classes)
            kappa = float(fleiss_kappa(table, method="fleiss"))
        out.append((k, len(data), kappa))
    return pd.DataFrame(out, columns=["raters", "items", "kappa"])


def out_of_fold_proba(X: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5,
                      random_state: int = 0) -> np.ndarray:
    """(len(y), n_classes) out-of-fold probabilities of a logistic regression on X for labels y, each
    item predicted by a model that did not see it (CROWDLAB's held-out model). Classes never seen
    keep a small floor probability; rows sum to 1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(y)
    out = np.zeros((n, n_classes))
    counts = np.bincount(y, minlength=n_classes)
    k = int(min(folds, n))
    present = counts[counts > 0]
    if k < 2 or len(present) < 2:
        out[np.arange(n), y] = 1.0   # one class or one item: no model can be held out; say so below
        return _floor(out)
    split = (StratifiedKFold(k, shuffle=True, random_state=random_state) if present.min() >= k
             else KFold(k, shuffle=True, random_state=random_state))
    for train, test in split.split(X, y):
        seen = np.unique(y[train])
        if len(seen) < 2:
            out[test, seen[0]] = 1.0
            continue
        clf = LogisticRegression(max_iter=300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X[train], y[train])
        out[np.ix_(test, clf.classes_)] = clf.predict_proba(X[test])
    return _floor(out)


def _floor(p: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    p = p + eps
    return p / p.sum(axis=1, keepdims=True)


def consensus(matrix: pd.DataFrame, pred_probs: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CROWDLAB consensus per item (consensus_label, consensus_quality_score, annotator_agreement,
    num_annotations) and per annotator (annotator_quality, agreement_with_consensus, ...), via
    ``cleanlab.multiannotator.get_label_quality_multiannotator``. Needs two or more annotators."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = get_label_quality_multiannotator(matrix, pred_probs, verbose=False)
    items = res["label_quality"].copy()
    items.index = matrix.index
    return items, res["annotator_stats"]


def team_report(session: Any, *, low_quality: float = 0.5, gap_s: float = ACTIVE_GAP_S) -> TeamReport:
    """Per-annotator counts, labels/hour, Cohen's kappa per pair, Krippendorff's alpha, agreement with
    the model, CROWDLAB consensus and annotator quality, and the items to review (annotators disagree,
    or the consensus quality score is below ``low_quality``), from the session's store."""
    classes = [str(c) for c in session.classes]
    events = session.store.events(("human", "review"))
    notes: list[str] = []
    activity = annotator_activity(events, gap_s)
    m = label_matrix(events, classes)
    names = list(m.columns)
    kappa, shared = pairwise_kappa(m) if len(names) else (pd.DataFrame(), pd.DataFrame())
    alpha = krippendorff_alpha(m) if len(names) >= 2 else float("nan")
    fleiss = fleiss_by_group(m, len(classes))
    if len(names) < 2:
        notes.append("agreement needs labels from two or more annotators")
    elif not np.isfinite(alpha):
        notes.append("no item has labels from two annotators that differ in class use yet: alpha undefined")
    items = pd.DataFrame(columns=["id", "labels", "consensus", "agreement", "quality", "n"])
    quality = pd.Series(dtype=float)
    agree_model = agree_prop = pd.Series(dtype=float)
    if len(m):
        from cleanlab.multiannotator import get_majority_vote_label

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            majority = np.asarray(get_majority_vote_label(m, verbose=False), dtype=int) if len(names) >= 2 \
                else m.iloc[:, 0].astype(int).to_numpy()
        X = np.asarray(session.embeddings, dtype=np.float32)[m.index.to_numpy(dtype=np.int64)]
        proba = out_of_fold_proba(X, majority, len(classes))
        pred = proba.argmax(1)
        agree_model = pd.Series({a: float((m[a].dropna().astype(int).to_numpy()
                                           == pred[m[a].notna().to_numpy()]).mean()) for a in names})
        agree_prop = _agree_propagated(session, m, classes)
        if len(names) >= 2:
            try:
                per_item, per_ann = consensus(m, proba)
                quality = per_ann["annotator_quality"]
                cons, score = per_item["consensus_label"].astype(int).to_numpy(), per_item[
                    "consensus_quality_score"].to_numpy(dtype=float)
            except Exception as e:  # cleanlab refuses some degenerate inputs; say why, keep the rest
                notes.append(f"consensus unavailable: {e}")
                cons, score = majority, np.full(len(m), np.nan)
            # how far the people agree among themselves (CROWDLAB's annotator_agreement is agreement with
            # its consensus, which the model can move away from two annotators who agree)
            agreement = _majority_share(m, majority)
        else:
            cons, score, agreement = majority, np.full(len(m), np.nan), np.ones(len(m))
        labels = [{a: classes[int(v)] for a, v in row.dropna().items()} for _, row in m.iterrows()]
        items = pd.DataFrame({"id": m.index.to_numpy(dtype=np.int64), "labels": labels,
                              "consensus": [classes[int(c)] for c in cons], "agreement": agreement,
                              "quality": score, "n": m.notna().sum(axis=1).to_numpy()})
    ann = activity.set_index("annotator")
    ann["agree_model"] = agree_model.reindex(ann.index)
    ann["agree_propagated"] = agree_prop.reindex(ann.index)
    ann["quality"] = quality.reindex(ann.index) if len(quality) else np.nan
    ann = ann.reset_index().sort_values("items", ascending=False, ignore_index=True)
    conflicts = _conflicts(items, events, low_quality, _leads(session.store))
    return TeamReport(ann, kappa, shared, alpha, items, conflicts, notes, fleiss)


def _agree_propagated(session: Any, m: pd.DataFrame, classes: list[str]) -> pd.Series:
    """Per annotator: the share of their labels equal to the model's propagated label of the item
    (e.g. LANCET's, written before they labeled it), over the items that have one; NaN where none."""
    fn = getattr(session, "propagated", None)
    if not callable(fn):
        return pd.Series(dtype=float)
    prop = fn(ids=m.index.to_numpy(dtype=np.int64))
    if prop is None or len(prop) == 0:
        return pd.Series({a: float("nan") for a in m.columns})
    lookup = {c: i for i, c in enumerate(classes)}
    model = pd.Series(prop["label"].map(lookup).to_numpy(dtype=float), index=prop["id"].to_numpy(dtype=np.int64))
    out = {}
    for a in m.columns:
        both = pd.concat([m[a], model.rename("model")], axis=1, join="inner").dropna()
        out[a] = float((both[a] == both["model"]).mean()) if len(both) else float("nan")
    return pd.Series(out)


def _majority_share(m: pd.DataFrame, majority: np.ndarray) -> np.ndarray:
    vals = m.to_numpy()
    hits = (vals == majority[:, None]).sum(axis=1)
    return hits / np.maximum(np.isfinite(vals).sum(axis=1), 1)


def _leads(store: Any) -> set[str] | None:
    """Names with the lead role in the store's registry; None without a registry (single user: any
    review label settles)."""
    fn = getattr(store, "annotators", None)
    if not callable(fn) or not hasattr(store, "annotator_for_token_hash"):
        return None
    reg = fn()
    if reg is None or len(reg) == 0:
        return None
    return {str(n) for n, r in zip(reg["name"], reg["role"]) if str(r) == "lead"}


def _conflicts(items: pd.DataFrame, events: pd.DataFrame, low_quality: float,
               leads: set[str] | None = None) -> pd.DataFrame:
    """Items whose annotators disagree (or whose consensus quality is low), not yet settled by a review
    label given after their latest human label; disagreements first (lowest agreement), then the items
    the annotators agree on but CROWDLAB doubts (lowest quality). With ``leads`` (a team), only a
    lead's review label settles an item: an annotator's Inspect relabel or LANCET spot check is also a
    "review" label, and took the item off the lead's list."""
    if items.empty:
        return items.copy()
    multi = items["n"] >= 2
    disagree = multi & (items["agreement"] < 1.0)
    low = multi & (items["quality"] < low_quality)
    todo = items[disagree | low]
    if todo.empty:
        return todo.copy()
    rev = events[events["source"] == "review"]
    if leads is not None:
        rev = rev[rev["annotator"].isin(leads)]
    rev = rev.groupby("id")["seq"].max()
    hum = events[events["source"] == "human"].groupby("id")["seq"].max()
    settled = {int(i) for i, s in rev.items() if s > hum.get(i, -1)}
    todo = todo[~todo["id"].isin(settled)]
    return todo.sort_values(["agreement", "quality", "id"], kind="stable", ignore_index=True)
