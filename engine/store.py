"""The store: a directory of Delta tables, one writer at a time (SPEC §7 exit 5 when locked).

Tables (see DESIGN.md): `journal` (the truth: every received row with its outcome; one ingest
batch is one commit), and what is derived from it for speed, each committed with the journal
batch it reflects (a Delta app transaction `juki-journal`): `current_base` + `current_delta`,
`codes`, `positions`, `held`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.errors import StoreUnavailable
from engine.schema import (
    CODES_SCHEMA,
    CURRENT_SCHEMA,
    HELD_SCHEMA,
    JOURNAL_SCHEMA,
    POSITIONS_SCHEMA,
)

APP_ID = "juki-journal"


def _keep_log() -> Any:
    from deltalake import PostCommitHookProperties

    # Checkpoints yes; never delete commit entries: the journal's log is part of the audit trail.
    return PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)


KEEP_LOG = _keep_log()
SCHEMAS: dict[str, pa.Schema] = {
    "journal": JOURNAL_SCHEMA,
    "current_base": CURRENT_SCHEMA,
    "current_delta": CURRENT_SCHEMA,
    "codes": CODES_SCHEMA,
    "positions": POSITIONS_SCHEMA,
    "held": HELD_SCHEMA,
}
DERIVED = ("current_base", "current_delta", "codes", "positions", "held")


@dataclass(frozen=True)
class JournalHead:
    """What the last journal commit says: its last batch, the next person key, the last stamp.

    Batches are numbered 1, 2, … (the journal's `batch` column); derived tables record the last
    batch they reflect. Other commits (merging small files) carry the same metadata.
    """

    version: int  # the journal's Delta version
    batch: int  # 0: no batch yet
    next_person: int
    recorded_at: dt.datetime | None


class Store:
    """Handle on a store directory; create tables on first write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def table_path(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return _has_commit(self.table_path("journal"))

    def require(self, table: str | None = None) -> None:
        """Raise StoreUnavailable unless the store has been created (or, when a table is named,
        at least that table: `juki registry load` may come before the first ingest)."""
        if not self.exists() and (table is None or not _has_commit(self.table_path(table))):
            raise StoreUnavailable(f"{self.path}: no juki store here (run `juki ingest` first)")

    def damage(self) -> str | None:
        """The first damage a quick look finds (a Delta log that cannot be read, or a data file
        it names that is missing or not Parquet by its magic bytes), else None. For a failure
        no rule foresaw: a damaged store is exit 5, not an internal error (SPEC §7)."""
        if not self.path.is_dir():
            return None
        if self.exists():  # every table is created with the store
            for name in SCHEMAS:
                if not _has_commit(self.table_path(name)):
                    return f"{self.table_path(name)}: table missing"
        roots = sorted(p for p in self.path.iterdir() if (p / "_delta_log").is_dir())
        for root in roots:
            try:
                files = self.delta(root.name).file_uris()
            except Exception as e:  # noqa: BLE001 - any failure to read the log is the damage
                return f"{root}: its Delta log cannot be read ({_first_line(e)})"
            for name in files:
                file = Path(name.removeprefix("file://"))
                problem = _parquet_problem(file)
                if problem:
                    return f"{file}: {problem}"
        return None

    def ensure_tables(self) -> None:
        """Create every missing table (empty), so readers always find all of them."""
        from deltalake import write_deltalake

        self.path.mkdir(parents=True, exist_ok=True)
        for name, schema in SCHEMAS.items():
            root = self.table_path(name)
            if not _has_commit(root):
                # A table whose first commit never completed (a crash while the store was being
                # created) holds nothing: start it again.
                shutil.rmtree(root, ignore_errors=True)
                write_deltalake(str(root), schema.empty_table(), mode="append")

    # -- versions ----------------------------------------------------------------------------
    def delta(self, name: str) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(str(self.table_path(name)))

    def journal_head(self) -> JournalHead:
        """Version and metadata of the last journal commit (cheap: one log entry)."""
        if not self.exists():
            return JournalHead(-1, 0, 0, None)
        from engine.deltalog import newest_entry

        latest = newest_entry(self.table_path("journal"))
        info = None if latest is None else next(
            (a["commitInfo"] for a in latest[1] if "commitInfo" in a), None)  # fmt: skip
        if latest is not None and info is not None:
            version, meta = latest[0], info
        else:  # (a log entry without commit information: as delta-rs reads it)
            table = self.delta("journal")
            version, meta = table.version(), table.history(1)[0]
        stamp = meta.get("juki_recorded_at")
        return JournalHead(
            version=version,
            batch=int(meta.get("juki_batch", 0)),
            next_person=int(meta.get("juki_next_person", 0)),
            recorded_at=dt.datetime.fromisoformat(stamp) if stamp else None,
        )

    def reflected_batch(self, name: str) -> int:
        """The last journal batch a derived table reflects (0: none yet)."""
        root = self.table_path(name)
        if not _has_commit(root):
            return 0
        from engine.deltalog import newest_entry

        latest = newest_entry(root)  # every commit of a derived table names it: read that one
        for action in latest[1] if latest is not None else []:
            txn = action.get("txn")
            if txn is not None and txn.get("appId") == APP_ID:
                return int(txn["version"])
        v = self.delta(name).transaction_version(APP_ID)  # (else the whole log's, by delta-rs)
        return 0 if v is None else int(v)

    def tables(self) -> list[str]:
        """Every Delta table in the store: the journal and derived tables first, then the others
        (registry, requests, provisions, subscriptions, targets, push and job runs, …)."""
        others = sorted(d.name for d in self.path.iterdir()
                        if d.name not in SCHEMAS and _has_commit(d))  # fmt: skip
        return [*SCHEMAS, *others]

    def sizes(self) -> dict[str, int]:
        """Bytes on disk per table."""
        out = {}
        for name in self.tables():
            root = self.table_path(name)
            out[name] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        return out

    # -- the writer lock -----------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(
        self, command: str, *, wait: bool = False, lock: str = ".writer.lock"
    ) -> Iterator[None]:
        """Hold the store's exclusive writer lock; a second writer exits 5 naming the holder.

        `lock` names another lock file for writers of other tables (push: `.push.lock`).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / lock
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreUnavailable.locked(self.path, holder) from None
        try:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": command,
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            data = json.dumps(info).encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _read_holder(fd: int, patience: float = 2.0) -> str:
    """Who holds the lock; a writer that has just taken it may not have written itself yet."""
    deadline = time.monotonic() + patience
    while True:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if holder or time.monotonic() >= deadline:
            return holder or "unknown"
        time.sleep(0.02)


def _has_commit(root: Path) -> bool:
    """A Delta table exists once its first commit file does."""
    return (root / "_delta_log" / "00000000000000000000.json").is_file()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _parquet_problem(file: Path) -> str | None:
    """Why `file` is not a whole Parquet file by its size and magic bytes, else None."""
    try:
        with open(file, "rb") as f:
            head = f.read(4)
            f.seek(0, os.SEEK_END)
            if f.tell() < 12:
                return "not a Parquet file (too short)"
            f.seek(-4, os.SEEK_END)
            tail = f.read(4)
    except FileNotFoundError:
        return "missing (named by its table's Delta log)"
    except OSError as e:
        return f"cannot be read ({_first_line(e)})"
    if head != b"PAR1" or tail != b"PAR1":
        return "not a Parquet file (magic bytes not found)"
    return None
