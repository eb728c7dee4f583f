"""Skip the browser tests cleanly where Debian chromium or playwright is missing."""
import os

import pytest

from .harness import CHROMIUM


def pytest_collection_modifyitems(config, items):
    reason = None
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing (make test installs Debian chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "python playwright is not installed (pip install -e '.[dev]')"
    if reason:
        for item in items:
            if "e2e" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))
