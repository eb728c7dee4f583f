"""What a lead reads in the Team tab's charts: the same numbers, in the same order, as its tables."""
from __future__ import annotations

import math

import numpy as np

from dcai_widgets.widgets.team import TeamPanel


def ada_and_bo(demo, n: int, n_wrong: int) -> np.ndarray:
    """ada labels items 0..n-1 right, bo the same items with the first `n_wrong` wrong; bo's labels."""
    y, names = demo.y_true, demo.classes
    ids = np.arange(n)
    demo.label(ids, [names[k] for k in y[ids]], annotator="ada")
    bo = y[ids].copy()
    bo[:n_wrong] = (bo[:n_wrong] + 1) % 10
    demo.label(ids, [names[k] for k in bo], annotator="bo")
    return bo


def test_charts_show_no_made_up_rates_and_read_like_the_kappa_table(demo):
    """Labels written in one instant have no labels/hour (the table says "–"); the chart drew a bar at
    0 for them, a number nobody measured. The kappa heatmap listed its rows bottom-up (bokeh's
    categorical axis) while the table beside it lists them top-down."""
    ada_and_bo(demo, 30, 6)                                               # each one batch: one instant
    panel = TeamPanel(demo, background=False)
    rep = panel.report
    table_rates = dict(zip(rep.annotators["annotator"], rep.annotators["labels_per_h"]))
    assert all(math.isnan(r) for r in table_rates.values())           # the table's "–"
    assert panel.table.value.count("<td>–</td>") >= 2
    chart = dict(zip(panel.counts_source.data["annotator"], panel.counts_source.data["rate"]))
    assert chart.keys() == table_rates.keys()
    assert all(math.isnan(r) for r in chart.values()), f"bars drawn for unknown rates: {chart}"
    order = list(rep.kappa.columns)
    assert list(panel.figures["kappa"].x_range.factors) == order
    assert list(panel.figures["kappa"].y_range.factors) == order[::-1]  # first row at the top
    assert panel.kappa_table.value.index("<tr><th>ada</th>") < panel.kappa_table.value.index("<tr><th>bo</th>")
    assert panel.figures["rate"].title.text.endswith("(none measured yet)")
    assert panel.figures["rate"].y_range.start == 0 and panel.figures["rate"].y_range.end == 1.0


def test_review_says_whose_consensus_it_is_and_why_an_item_is_listed(demo):
    """In the served 3-annotator app the Review tab showed "ada: 4, bo: 5 · consensus 1" (CROWDLAB's
    held-out model outweighing two annotators it rates low) and listed an item both annotators gave
    "2" without saying why."""
    from dcai_widgets.widgets.review import ReviewPanel

    r = ReviewPanel(demo, annotator="lee", background=False)
    r._loaded([dict(id=929, labels={"ada": "4", "bo": "5"}, consensus="1", agreement=0.5, quality=0.24),
               dict(id=1742, labels={"ada": "2", "cy": "2"}, consensus="2", agreement=1.0, quality=0.31),
               dict(id=7, labels={"ada": "3", "bo": "5"}, consensus="3", agreement=0.5, quality=0.6)])
    assert r.current == 929
    assert "held-out model's pick: no annotator gave it" in r.labels_html.value
    assert "annotators disagree" in r.labels_html.value
    r.press("n")
    assert r.current == 1742 and "model's pick" not in r.labels_html.value
    assert "consensus quality 0.31 is below 0.50 although the annotators agree" in r.labels_html.value
    r.press("n")
    assert r.current == 7 and "model's pick" not in r.labels_html.value
    assert "annotators disagree" in r.labels_html.value


def test_only_a_leads_review_label_takes_an_item_off_the_review_list(demo):
    """Any annotator writes "review" labels too (an Inspect relabel, a LANCET spot check); bo's review
    label on an item he disputed with ada took it off the lead's Review list as if a lead had settled it."""
    from dcai_widgets.team import team_report

    for name, role in (("ada", "annotator"), ("bo", "annotator"), ("lee", "lead")):
        demo.store.add_annotator(name, role=role, token_hash=f"hash-of-{name}")
    y, names = demo.y_true, demo.classes
    wrong = ada_and_bo(demo, 10, 5)
    disputed = set(range(5))
    assert set(team_report(demo).conflicts["id"]) >= disputed
    demo.label([0], [names[wrong[0]]], annotator="bo", source="review")       # bo "settles" his own way
    assert 0 in set(team_report(demo).conflicts["id"]), "an annotator's review label settled a conflict"
    demo.label([1], [names[y[1]]], annotator="lee", source="review")          # the lead settles one
    left = set(team_report(demo).conflicts["id"])
    assert 1 not in left and 0 in left
