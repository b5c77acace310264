"""Fail points: named moments where a test freezes a juki process to kill it exactly there.

`JUKI_STOP_AT=name:n` makes the n-th passage of point `name` stop the whole process (SIGSTOP);
the test sees the stopped state and sends SIGKILL. Without the variable a point costs one
environment lookup. Points: `journal-commit` (a journal batch is committed), `derived-commit`
(a derived table committed its catch-up).
"""

from __future__ import annotations

import os
import signal

_passages: dict[str, int] = {}


def point(name: str) -> None:
    wanted = os.environ.get("JUKI_STOP_AT")
    if not wanted:
        return
    target, _, count = wanted.partition(":")
    if target != name:
        return
    _passages[name] = _passages.get(name, 0) + 1
    if _passages[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGSTOP)
