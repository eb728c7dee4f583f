"""Agreement and quality from a real store: kappa/alpha match the libraries on the same labels, a noisy
annotator gets the lowest CROWDLAB quality, conflicts list disagreements until a lead's review label."""
from __future__ import annotations

import numpy as np
import pytest

from dcai_widgets.team import (annotator_activity, fleiss_by_group, krippendorff_alpha, label_matrix,
                               pairwise_kappa, team_report)


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


def test_fleiss_kappa_is_fleiss_1971_on_the_textbook_table():
    """The worked example of Fleiss' kappa (10 items, 14 raters, 5 classes; kappa 0.210, as on
    Wikipedia's 'Fleiss' kappa' page), given as a label matrix of 14 annotators."""
    import pandas as pd

    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    rows = [np.repeat(np.arange(5), c).astype(float) for c in counts]
    m = pd.DataFrame(rows, columns=[f"r{k}" for k in range(14)])
    fl = fleiss_by_group(m, 5)
    assert fl[["raters", "items"]].values.tolist() == [[14, 10]]
    assert fl["kappa"].iloc[0] == pytest.approx(0.2099, abs=5e-4)


def test_fleiss_kappa_per_group_of_items_with_the_same_number_of_annotators(team):
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    m = label_matrix(team.store.events(("human", "review")), team.classes)
    fl = fleiss_by_group(m, 10).set_index("raters")
    n = m.notna().sum(axis=1)
    assert set(fl.index) == {2, 3} and fl.loc[2, "items"] == (n == 2).sum() and fl.loc[3, "items"] == (n == 3).sum()
    three = m[n == 3].to_numpy().astype(int)                 # every item of the group has all three labels
    assert fl.loc[3, "kappa"] == pytest.approx(fleiss_kappa(aggregate_raters(three, n_cat=10)[0]))
    assert 0.3 < fl.loc[3, "kappa"] < 0.9                  # cy's 50% accuracy pulls it below ada/bo's
    rep = team_report(team)
    assert rep.fleiss.set_index("raters")["kappa"].to_dict() == pytest.approx(fl["kappa"].to_dict())
    # one class only: chance agreement is 1, kappa undefined (NaN), not a division error
    import pandas as pd

    same = fleiss_by_group(pd.DataFrame({"a": [1.0, 1.0], "b": [1.0, 1.0]}))
    assert same["items"].tolist() == [2] and np.isnan(same["kappa"].iloc[0])
    assert fleiss_by_group(pd.DataFrame({"a": [1.0, 2.0]})).empty   # one annotator: no group
