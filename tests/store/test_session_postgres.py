"""Session(store="postgresql://...") works like an SQLite store path: labels, undo, propagated labels,
exclusions, and a second session on the same URL sees them."""
import dcai_widgets as dw
from dcai_widgets.store.postgres import PgLabelStore


def test_session_on_a_postgresql_url(pg_server):
    url = pg_server.new_database()
    s = dw.Session.demo(store=url)
    assert isinstance(s.store, PgLabelStore) and "postgresql://" in repr(s)
    s.label([1, 2], [s.classes[0], s.classes[1]], annotator="ada")
    s.label([3], [s.classes[2]], annotator="ada")
    s.undo(annotator="ada")
    s.set_propagated([5, 6], [s.classes[3], s.classes[4]], [0.9, 0.8], model_version="m")
    s.exclude([7], annotator="ada")
    again = dw.Session.demo(store=url)
    assert again.labeled()["id"].tolist() == [1, 2]
    assert again.propagated()["id"].tolist() == [5, 6]
    assert again.excluded().tolist() == [7]
