"""Shared fixtures: an isolated cache per test run, the demo session, and the ../shared data folder."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One cache for the whole run (embeddings/maps are computed once), never the user's own cache.
os.environ.setdefault("DCAI_WIDGETS_CACHE", tempfile.mkdtemp(prefix="dcai-widgets-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_data_dir() -> Path | None:
    """../shared/data beside the repo (or $DCAI_SHARED_DATA), or None when this clone has none."""
    env = os.environ.get("DCAI_SHARED_DATA")
    p = Path(env) if env else ROOT.parent / "shared" / "data"
    return p if p.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    p = shared_data_dir()
    if p is None:
        pytest.skip("../shared/data is absent (a user's clone has none); this test needs the shared datasets")
    return p


@pytest.fixture
def demo(tmp_path):
    """The digits demo with its own fresh label store file."""
    import dcai_widgets as dw

    return dw.Session.demo(store=tmp_path / "labels.db")
