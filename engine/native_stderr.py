"""Keep Rust panic reports off the command's stderr (SPEC §7: one line, never a traceback).

A Rust library (Polars, delta-rs) that panics on a damaged file prints its panic report straight
to file descriptor 2 before Python sees the exception; the CLI then maps the exception to its one
line (`engine/cli.py`). So while a command runs, descriptor 2 is a pipe read by a thread that
passes every line on except panic reports; Python's own stderr (rich's progress, the final line)
writes to the original descriptor directly. `--debug` leaves descriptor 2 alone.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import BinaryIO

# "thread 'name' panicked at file:line:col:" (Rust ≥ 1.73; "(id)" after the name since 1.88)
_PANIC = re.compile(rb"^thread '[^']*'( \(\d+\))? panicked at ")
_NOTE = re.compile(rb"^note: (run with `RUST_BACKTRACE|Some details are omitted)")


class NativeStderr:
    """Descriptor 2 filtered of panic reports between `start` and `stop`."""

    def __init__(self) -> None:
        self._original = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Filter descriptor 2 from now on (nothing happens when it is closed: nothing to keep
        clean, as under a scheduler that closed it)."""
        sys.stderr.flush()
        try:
            self._original = os.dup(2)
        except OSError:
            return
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        # Python's stderr keeps the terminal (rich asks it whether it is one)
        sys.stderr = open(self._original, "w", encoding=sys.stderr.encoding,  # noqa: SIM115
                          errors="backslashreplace", buffering=1, closefd=False)  # fmt: skip
        source = open(read, "rb", buffering=0)  # noqa: SIM115 - closed by the thread
        self._thread = threading.Thread(target=self._pass, args=(source,), daemon=True,
                                         name="juki-stderr")  # fmt: skip
        self._thread.start()

    def _pass(self, source: BinaryIO) -> None:
        dropping = False
        blank = b""  # blank lines held back: a report starts with one
        with source:
            for line in iter(source.readline, b""):
                if dropping:
                    dropping = not (_NOTE.match(line) or not line.strip())  # its last line
                elif _PANIC.match(line):
                    dropping, blank = True, b""
                elif not line.strip():
                    blank += line
                else:
                    os.write(self._original, blank + line)
                    blank = b""
            if blank:
                os.write(self._original, blank)

    def stop(self) -> None:
        """Restore descriptor 2 and pass on what is still in the pipe."""
        if self._thread is None:
            return
        sys.stderr.flush()
        os.dup2(self._original, 2)  # closes the pipe's last writer: the thread reads to the end
        self._thread.join(timeout=2)
        self._thread = None
