"""Offline comparison of audit-gate rules on saved gate curves (``benchmarks/calibration.py --gate-from``).

A gate curve (``calibration.py --gate --states DIR``) saves every suggestion a simulated person was shown
along an engine's label curve: the human labels of the fit that made it, its shown (calibrated)
confidence, and whether the person's label equalled it. Any rule of ``calibration.SuggestionAudit`` can
then be replayed on the same record as the Label panel applies it: before each suggestion is shown the
audit's verdict is taken on the records before it (prequential, Dawid 1984), and the suggestion is shown
as a percentage only when the verdict is open and its fit had at least ``SHOW_PERCENT_FROM`` labels.
Figures per rule and engine: the share of suggestions shown as a percentage (coverage), the ECE of the
shown ones pooled over curves against its sampling floor, the worst curve, and the "recent k/n" error
(how far the audited records' accuracy is from the next 50 suggestions' accuracy) at each checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dcai_widgets.calibration import SHOW_PERCENT_FROM, SuggestionAudit, ece, ece_floor

# the rules compared (name -> SuggestionAudit keyword arguments; no "recent" = the plain window); "w50" is the
# gate shipped before issue 14's third pass, "shipped" (added by ``compare``) the one shipped now
RULES: dict[str, dict] = {
    "w50": dict(window=50, min_n=20),
    "w30": dict(window=30, min_n=20),
    "w30m15": dict(window=30, min_n=15),
    "w20m10": dict(window=20, min_n=10),
    "w100": dict(window=100, min_n=20),
    "w50r0.5": dict(window=50, min_n=20, recent=0.5),
    "w50m15r0.5": dict(window=50, min_n=15, recent=0.5),
    "w30r0.5": dict(window=30, min_n=20, recent=0.5),
    "w50r0.67": dict(window=50, min_n=20, recent=0.67),
    "w50r0.8": dict(window=50, min_n=20, recent=0.8),
    "w50m15r0.67": dict(window=50, min_n=15, recent=0.67),
    "w50m10r0.8": dict(window=50, min_n=10, recent=0.8),
    "w30m15r0.67": dict(window=30, min_n=15, recent=0.67),
    "w100r0.67": dict(window=100, min_n=20, recent=0.67),
    # the shipped audit, and also hiding the suggestions of "-imprecise" fits (fifth pass; not shipped)
    "w30r0.5_precise": dict(window=30, min_n=20, recent=0.5, precise=True),
}


def shipped() -> dict:
    """The keyword arguments of the audit the Label panel uses (``SuggestionAudit()``'s defaults)."""
    import inspect

    return {k: v.default for k, v in inspect.signature(SuggestionAudit).parameters.items()
            if k in ("window", "min_n", "recent")}


def load(folder: str, partial: bool = False) -> list[dict]:
    """Every finished ``*_gate.json`` curve in ``folder`` (``partial``: also curves still running or
    stopped early, scored on the rounds they reached)."""
    docs = [json.loads(f.read_text()) for f in sorted(Path(folder).glob("*_gate.json"))]
    return [d for d in docs if d.get("done") or (partial and d["log"])]


def replay(doc: dict, rule: dict, upto: int = 100) -> dict:
    """One curve under one rule: per suggestion (fit labels, shown confidence, right, shown as a
    percentage?) and per checkpoint (audited k/n before it, the next 50 suggestions' accuracy). A rule with
    ``precise=True`` also hides the suggestions of fits whose model version says "-imprecise" (the Label tab
    prints "uncertain" for them; the audit still records them, as the panel does)."""
    rule = dict(rule)
    use_precise = bool(rule.pop("precise", False))
    audit = SuggestionAudit(**{"recent": None, **rule})   # a rule without ``recent`` audits the plain window
    recs, checks, seen_fits = [], [], set()
    log = doc["log"]
    for j, (m, c, o, *rest) in enumerate(log):
        precise = bool(rest[0]) if rest else True   # curves saved before the "-imprecise" flag: precise
        if m not in seen_fits and SHOW_PERCENT_FROM <= m <= upto:   # a checkpoint: the first record of a fit
            seen_fits.add(m)
            v = audit.verdict(fit=m)
            fut = [(cc, oo) for mm, cc, oo, *_ in log[j:] if mm >= m][:50]
            if len(fut) < 50:     # a partial curve: the next 50 are not known yet
                continue
            checks.append({"labels": m, "open": bool(v.open), "k": v.k, "n": v.n,
                           "future_accuracy": float(np.mean([oo for _, oo in fut])) if fut else float("nan"),
                           "future_conf": [cc for cc, _ in fut], "future_ok": [oo for _, oo in fut]})
        shown = m >= SHOW_PERCENT_FROM and (precise or not use_precise) and audit.verdict(fit=m).open
        recs.append((m, c, o, shown))
        audit.record(c, bool(o), fit=m)
    return {"recs": recs, "checks": checks}


def _ece_floor(c: np.ndarray, o: np.ndarray) -> tuple[float | None, float | None]:
    if not len(c):
        return None, None
    return round(ece(c, o), 4), round(ece_floor(c, 50), 4)


def score(docs: list[dict], rule: dict, lo: int = SHOW_PERCENT_FROM, hi: int = 100) -> dict:
    """A rule's figures over the curves ``docs`` (one engine), suggestions from fits with lo..hi labels."""
    shown_c, shown_o, all_c, all_o, cells, errs, at = [], [], [], [], {}, [], {}
    rounds = []   # (verdict open?, that fit's ECE on the next items it would ask) per round lo..hi
    for d in docs:
        r = replay(d, rule, hi)
        nxt = {c["labels"]: c for c in d["checks"]}
        rounds += [(ch["open"], nxt[ch["labels"]]["next_ece"]) for ch in r["checks"]
                   if lo <= ch["labels"] <= hi and ch["labels"] in nxt]
        part = [(c, o, s) for m, c, o, s in r["recs"] if lo <= m <= hi]
        c = np.array([p[0] for p in part]); o = np.array([p[1] for p in part], bool); s = np.array([p[2] for p in part], bool)
        shown_c.append(c[s]); shown_o.append(o[s]); all_c.append(c); all_o.append(o)
        e_c, f_c = _ece_floor(c[s], o[s])
        cells[f"{d['dataset']}/s{d['seed']}"] = {"shown": round(float(s.mean()), 3) if len(s) else None,
                                                "ece_shown": e_c, "floor_shown": f_c, "n_shown": int(s.sum()),
                                                "ece_ungated": round(ece(c, o), 4) if len(c) else None}
        for ch in r["checks"]:
            if ch["n"]:
                errs.append(abs(ch["k"] / ch["n"] - ch["future_accuracy"]))
            if ch["labels"] in (50, 100):
                at.setdefault(ch["labels"], []).append(ch)
    per_ds: dict = {}
    for d, c, o, a, b in zip(docs, shown_c, shown_o, all_c, all_o):
        g = per_ds.setdefault(d["dataset"], [[], [], [], []])
        g[0].append(c), g[1].append(o), g[2].append(a), g[3].append(b)
    datasets = {}
    for name, (c, o, a, b) in sorted(per_ds.items()):
        c, o, a, b = np.concatenate(c), np.concatenate(o), np.concatenate(a), np.concatenate(b)
        e, f = _ece_floor(c, o)
        eu, fu = _ece_floor(a, b)
        datasets[name] = {"share_shown": round(len(c) / max(1, len(a)), 3), "ece_shown": e, "floor_shown": f,
                          "ece_ungated": eu, "floor_ungated": fu, "n": len(a)}
    sc, so = np.concatenate(shown_c), np.concatenate(shown_o)
    ac, ao = np.concatenate(all_c), np.concatenate(all_o)
    e, f = _ece_floor(sc, so)
    eu, fu = _ece_floor(ac, ao)
    out = {"share_shown": round(len(sc) / max(1, len(ac)), 3), "ece_shown": e, "floor_shown": f,
           "ece_ungated": eu, "floor_ungated": fu,
           "ece_shown_cell_worst": max((v["ece_shown"] for v in cells.values() if v["ece_shown"] is not None),
                                       default=None),
           "rate_err_mean": round(float(np.mean(errs)), 4) if errs else None, "datasets": datasets, "cells": cells}
    # the lower-noise check: each round's own ECE on the next ``shown`` (500) items its fit would ask
    op = [e for o, e in rounds if o]
    cl = [e for o, e in rounds if not o]
    out["next"] = {"rounds": len(rounds), "open": round(len(op) / max(1, len(rounds)), 3),
                   "ece_open_mean": round(float(np.mean(op)), 4) if op else None,
                   "ece_open_worst": max(op) if op else None,
                   "ece_closed_mean": round(float(np.mean(cl)), 4) if cl else None,
                   "open_over_0.05": sum(e > 0.05 for e in op), "closed_under_0.05": sum(e <= 0.05 for e in cl)}
    for n, chs in sorted(at.items()):   # verdict at the checkpoint, scored on the next 50 shown
        op = [ch for ch in chs if ch["open"]]
        fc = np.concatenate([ch["future_conf"] for ch in op]) if op else np.zeros(0)
        fo = np.concatenate([ch["future_ok"] for ch in op]).astype(bool) if op else np.zeros(0, bool)
        e50, f50 = _ece_floor(fc, fo)
        out[f"at_{n}"] = {"open": f"{len(op)}/{len(chs)}", "ece_next50_shown": e50, "floor": f50}
    return out


def compare(folder: str, rules: dict[str, dict] | None = None, partial: bool = False) -> dict:
    """Every rule on every engine's curves in ``folder``: {engine: {rule: figures}}."""
    docs = load(folder, partial)
    out: dict = {}
    for eng in sorted({d["engine"] for d in docs}):
        part = [d for d in docs if d["engine"] == eng]
        out[eng] = {"curves": [f"{d['dataset']}/s{d['seed']}" for d in part]}
        for name, rule in {**(rules or RULES), "shipped": shipped()}.items():
            out[eng][name] = score(part, rule)
    return out
