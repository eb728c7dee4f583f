"""``make_store``: a fresh label store on each backend, so one set of tests checks both."""
from __future__ import annotations

import itertools

import pytest

from dcai_widgets.store import open_store

_n = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request, tmp_path):
    """make_store() -> a new empty store; ``.target`` reopens it from another thread or process."""
    opened = []
    if request.param == "sqlite":
        def make(**kw):
            s = open_store(tmp_path / f"s{next(_n)}.db", **kw)
            opened.append(s)
            return s
    else:
        pg = request.getfixturevalue("pg_server")

        def make(**kw):
            s = open_store(pg.new_database(), **kw)
            opened.append(s)
            return s
    yield make
    for s in opened:
        s.close()
