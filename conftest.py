"""Root pytest hooks: the process ends with os._exit (DESIGN.md: Arrow threads can abort exit)."""

from __future__ import annotations

import atexit
import os
import sys

import pytest


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._juki_exitstatus = int(exitstatus)  # type: ignore[attr-defined]


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """After the summary is printed: flush and leave before Arrow's threads can abort the exit."""
    status = getattr(config, "_juki_exitstatus", None)
    if status is None or os.environ.get("JUKI_NO_HARD_EXIT"):
        return
    atexit._run_exitfuncs()  # the handlers a normal exit would run (temporary stores' removal)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
