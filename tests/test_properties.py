"""Random bad input to the public constructors and label(): clear errors only, store never corrupted."""
import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dcai_widgets as dw

CLASSES = ["cat", "dog", "eel"]
N = 12

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5), st.binary(max_size=5),
    st.lists(st.one_of(st.integers(-50, 50), st.floats(), st.text(max_size=3), st.none()), max_size=6),
    hnp.arrays(hnp.floating_dtypes() | hnp.integer_dtypes(), hnp.array_shapes(max_dims=3, max_side=5)),
)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    db = tmp_path_factory.mktemp("prop") / "labels.db"
    X = np.random.default_rng(0).normal(size=(N, 4)).astype(np.float32)
    s = dw.Session.from_embeddings(X, CLASSES, store=db)
    s.label([0, 1, 2], ["cat", "dog", "eel"], annotator="seed")
    return s


def _snapshot(s):
    con = sqlite3.connect(s.store.path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return con.execute("SELECT * FROM events ORDER BY seq").fetchall()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=junk, labels=junk, annotator=st.one_of(st.none(), st.text(max_size=4), st.integers()))
def test_label_with_random_input_never_corrupts(session, ids, labels, annotator):
    before = _snapshot(session)
    try:
        session.label(ids, labels, annotator=annotator)
    except (ValueError, TypeError) as e:
        assert str(e)  # an explanation, not an empty error
        assert _snapshot(session) == before  # a refused call writes nothing
        return
    after = _snapshot(session)
    assert after[: len(before)] == before  # accepted: only appended, history intact
    cur = session.labeled()
    assert set(cur["label"]) <= set(CLASSES) and cur["id"].between(0, N - 1).all()


@settings(max_examples=120, deadline=None)
@given(X=junk, classes=junk)
def test_from_embeddings_with_random_input(X, classes):
    try:
        s = dw.Session.from_embeddings(X, classes)
    except (ValueError, TypeError) as e:
        assert str(e)
        return
    assert np.isfinite(s.embeddings).all() and len(s.classes) >= 2


@settings(max_examples=80, deadline=None)
@given(images=junk, classes=st.sampled_from([CLASSES, ["a"], "ab", None, [1, 2]]))
def test_from_images_with_random_input(images, classes):
    try:
        s = dw.Session.from_images(images, classes)
    except (ValueError, TypeError) as e:
        assert str(e)
        return
    assert len(s) >= 1 and s.items.kind == "image"


@settings(max_examples=60, deadline=None)
@given(texts=junk)
def test_from_texts_with_random_input(texts):
    try:
        s = dw.Session.from_texts(texts, CLASSES, encoder="tfidf")
    except (ValueError, TypeError) as e:
        assert str(e)
        return
    assert all(isinstance(t, str) for t in s.items.texts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.one_of(st.integers(-5, 5), st.lists(st.integers(0, 3), min_size=2, max_size=2),
                        st.floats(0, 3)))
def test_numbers_are_never_guessed_for_number_like_class_names(tmp_path_factory, labels):
    """With classes ['1', '2', '3'] a number could be a position or a name: always refused, never stored."""
    db = tmp_path_factory.mktemp("num") / "labels.db"
    s = dw.Session.from_embeddings(np.eye(4, dtype=np.float32), ["1", "2", "3"], store=db)
    with pytest.raises(ValueError, match="ambiguous|not a class"):
        s.label([0, 1], labels)
    assert s.labeled().empty
