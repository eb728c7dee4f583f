"""Agreement and quality from a real store: kappa/alpha match the libraries on the same labels, a noisy
annotator gets the lowest CROWDLAB quality, conflicts list disagreements until a lead's review label."""
from __future__ import annotations

import numpy as np
import pytest

from dcai_widgets.team import annotator_activity, krippendorff_alpha, label_matrix, pairwise_kappa, team_report


@pytest.fixture
def team(demo):
    """Three annotators on the digits demo: ada and bo copy y_true on 97% / 95% of items, cy is right on
    50%; each labels a random ~80% of items 0..239, so most items have two or three labels."""
    rng = np.random.default_rng(1)
    y, names = demo.y_true, demo.classes
    ids = np.arange(240)
    for who, acc in (("ada", 0.97), ("bo", 0.95), ("cy", 0.5)):
        mine = ids[rng.random(len(ids)) < 0.8]
        lab = np.where(rng.random(len(mine)) < acc, y[mine], rng.integers(0, 10, len(mine)))
        demo.label(mine, [names[k] for k in lab], annotator=who)
    return demo


def test_kappa_and_alpha_are_the_libraries_on_the_latest_labels(team):
    from sklearn.metrics import cohen_kappa_score
    import krippendorff

    ev = team.store.events(("human", "review"))
    m = label_matrix(ev, team.classes)
    kappa, shared = pairwise_kappa(m)
    both = m[["ada", "cy"]].dropna()
    assert shared.loc["ada", "cy"] == len(both) > 50
    assert kappa.loc["ada", "cy"] == pytest.approx(cohen_kappa_score(both["ada"], both["cy"]))
    assert kappa.loc["ada", "bo"] > 0.85 > 0.7 > kappa.loc["ada", "cy"]
    multi = m[m.notna().sum(axis=1) >= 2]
    assert krippendorff_alpha(m) == pytest.approx(krippendorff.alpha(multi.T.to_numpy(), level_of_measurement="nominal"))
    # a relabel replaces that annotator's earlier label in the matrix
    item = int(both.index[0])
    new = team.classes[(int(m.loc[item, "cy"]) + 1) % 10]
    team.label([item], [new], annotator="cy")
    assert label_matrix(team.store.events(("human",)), team.classes).loc[item, "cy"] == team.classes.index(new)


def test_report_ranks_the_noisy_annotator_last_and_review_settles_conflicts(team):
    rep = team_report(team)
    ann = rep.annotators.set_index("annotator")
    assert set(ann.index) == {"ada", "bo", "cy"}
    assert ann.loc["cy", "quality"] < min(ann.loc["ada", "quality"], ann.loc["bo", "quality"])
    assert ann.loc["cy", "agree_model"] < ann.loc["ada", "agree_model"]
    assert 0 < rep.alpha < 1
    # consensus beats the noisy annotator against the truth
    y = team.y_true[rep.items["id"].to_numpy()]
    cons = np.array([team.classes.index(c) for c in rep.items["consensus"]])
    assert (cons == y).mean() > 0.9
    # conflicts: items where the annotators disagree, worst first; a review label settles one
    assert len(rep.conflicts) > 10
    assert (rep.conflicts["agreement"].diff().dropna() >= 0).all()
    first = int(rep.conflicts["id"].iloc[0])
    assert len(set(rep.conflicts["labels"].iloc[0].values())) > 1 or rep.conflicts["quality"].iloc[0] < 0.5
    team.label([first], [team.classes[int(team.y_true[first])]], annotator="lead", source="review")
    after = team_report(team).conflicts
    assert first not in set(after["id"]) and len(after) == len(rep.conflicts) - 1


def test_labels_per_hour_counts_only_active_intervals():
    import pandas as pd

    ts = [0.0, 10.0, 20.0, 5000.0, 5030.0]       # a 4980 s break between two sessions
    ev = pd.DataFrame({"seq": range(5), "id": range(5), "label": "1", "annotator": "ada", "source": "human",
                       "ts": ts})
    act = annotator_activity(ev, gap_s=300).set_index("annotator")
    assert act.loc["ada", "labels"] == 5 and act.loc["ada", "items"] == 5
    assert act.loc["ada", "active_h"] == pytest.approx(50 / 3600)
    assert act.loc["ada", "labels_per_h"] == pytest.approx(3 / 50 * 3600)


def test_one_annotator_gives_no_agreement_and_says_why(demo):
    demo.label([1, 2, 3], ["1", "2", "3"], annotator="solo")
    rep = team_report(demo)
    assert np.isnan(rep.alpha) and rep.conflicts.empty
    assert any("two or more annotators" in n for n in rep.notes)
    assert rep.annotators.loc[0, "items"] == 3


def test_agreement_with_propagated_labels_where_present(team):
    ids = np.arange(0, 240)
    prop = team.y_true[ids].copy()
    team.set_propagated(ids, [team.classes[k] for k in prop], np.full(len(ids), 0.9))
    ann = team_report(team).annotators.set_index("annotator")
    assert ann.loc["ada", "agree_propagated"] > 0.9 > 0.7 > ann.loc["cy", "agree_propagated"]


def test_agreement_is_among_the_annotators_and_disagreements_come_first(team):
    rep = team_report(team)
    items = rep.items.set_index("id")
    for i, row in items.iterrows():
        votes = list(row["labels"].values())
        assert row["agreement"] == pytest.approx(max(votes.count(v) for v in votes) / len(votes))
    c = rep.conflicts
    split = (c["agreement"] < 1).to_numpy()
    assert split.any() and (split[:split.sum()]).all()   # every disagreement before any agreed-but-doubted item
