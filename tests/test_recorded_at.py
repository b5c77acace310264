"""SPEC §1: `recorded_at` is stamped once per ingest batch just before its commit, stamps strictly
increase, and the journal rows and the commit record the same stamp."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from builders import CHIYODA, Municipality, person, row, write_csv

import engine.ingest
from engine import deltalog
from engine.store import Store
from loaders.ingest import ingest_files

FILES = 10
WRITE_SECONDS = 0.2  # each journal file's write is made this slow


def test_each_batch_is_stamped_as_its_file_is_written_not_when_its_group_begins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A month's ~100 files are one group; their batches are committed one after another as
    their files are written. Stamping all of them when the group began put the last stamps
    seconds before their commits, so a read bounded at an instant in between (`--known-at`,
    `changes --until`) missed batches stamped before it and committed after it."""
    chiyoda = Municipality(CHIYODA)
    paths = [write_csv(tmp_path / f"b{i:02}.csv", [row(chiyoda, "A4", "2024-01-01", person(i))])
             for i in range(1, FILES + 1)]  # fmt: skip
    events: list[tuple[str, float]] = []
    lock = threading.Lock()
    write_rows, commit = engine.ingest._write_rows, deltalog.commit

    def slow_write(*args: Any) -> Any:
        time.sleep(WRITE_SECONDS)
        return write_rows(*args)

    def clock() -> dt.datetime:
        with lock:
            events.append(("stamp", time.monotonic()))
        return dt.datetime.now(dt.UTC)

    def noted_commit(path: Path, *args: Any, **kwargs: Any) -> Any:
        done = commit(path, *args, **kwargs)
        if path.name == "journal":
            with lock:
                events.append(("commit", time.monotonic()))
        return done

    monkeypatch.setattr(engine.ingest, "_write_rows", slow_write)
    monkeypatch.setattr(deltalog, "commit", noted_commit)
    store = Store(tmp_path / "store")
    store.ensure_tables()
    monkeypatch.setattr(engine.ingest.IngestSession, "__init__", _with_clock(clock))
    ingest_files(store, [str(p) for p in paths])

    kinds = [kind for kind, _ in events]
    assert kinds.count("stamp") == FILES and kinds.count("commit") == FILES
    # Two threads write files, each stamping its batch as it starts: before the k-th commit,
    # batches up to k + 1 are being written and k + 3 at most stamped (a thread that has just
    # written batch k + 1 stamps k + 3 while batch k is being committed). Stamping a group at
    # once stamps all of them before the first commit.
    stamps = commits = 0
    for kind in kinds:
        stamps, commits = stamps + (kind == "stamp"), commits + (kind == "commit")
        if kind == "commit":
            assert stamps <= commits + 3, kinds
    _check_stamps_agree(store)


def _with_clock(clock: Any) -> Any:
    init = engine.ingest.IngestSession.__init__

    def patched(self: Any, store: Store, **kwargs: Any) -> None:
        init(self, store, clock=clock)

    return patched


def _check_stamps_agree(store: Store) -> None:
    """Per batch one stamp, strictly increasing, the same in the rows and in the commit."""
    rows = (pl.read_delta(str(store.table_path("journal"))).group_by("batch")
            .agg(pl.col("recorded_at").n_unique().alias("n"), pl.col("recorded_at").first())
            .sort("batch"))  # fmt: skip
    assert rows["n"].to_list() == [1] * rows.height
    stamps = rows["recorded_at"].to_list()
    assert all(a < b for a, b in itertools.pairwise(stamps))
    logged = {int(c["juki_batch"]): dt.datetime.fromisoformat(c["juki_recorded_at"])
              for c in store.delta("journal").history() if c.get("juki_recorded_at")}  # fmt: skip
    assert {b: logged.get(b) for b in rows["batch"].to_list()} == dict(
        zip(rows["batch"].to_list(), stamps, strict=True))  # fmt: skip
