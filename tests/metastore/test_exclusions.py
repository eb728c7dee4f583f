"""Session.exclude / excluded (additive, stored append-only in the LabelStore) used by the Inspect panel."""
import pytest

import dcai_widgets as dw


def test_exclusions_persist_and_toggle(tmp_path):
    s = dw.Session.demo(store=tmp_path / "labels.db")
    assert s.excluded().tolist() == []
    s.exclude([3, 5, 8], reason="suspect")
    s.exclude([3], excluded=False)
    assert s.excluded().tolist() == [5, 8]
    again = dw.Session.demo(store=tmp_path / "labels.db")      # survives a restart
    assert again.excluded().tolist() == [5, 8]
    with pytest.raises(ValueError, match="99999"):
        s.exclude([99999])
    assert s.excluded().tolist() == [5, 8]
    assert s.labeled().empty                                   # exclusions are not labels
