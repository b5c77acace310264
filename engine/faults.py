"""Fail points: named moments where a test freezes a juki process to kill it exactly there.

`JUKI_STOP_AT=name:n` makes the n-th passage of point `name` stop the whole process (SIGSTOP);
the test sees the stopped state and sends SIGKILL. Without the variable a point costs one
environment lookup. Points: `journal-commit` (a journal batch is committed), `derived-commit`
(a derived table committed its catch-up).
"""

from __future__ import annotations

import os
import signal
import threading

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
        # To this thread, not the process: a process-directed SIGSTOP goes to the main thread,
        # and until that one is scheduled and stops the group, this thread would run on (a
        # committer thread committed the next batch that way on a loaded 2-core machine).
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
