"""A batch commits atomically (SPEC §4): after a crash the store holds all of a batch or none, and
the derived tables catch up to the journal (DESIGN.md "Safety"). Crashes are real: `juki ingest`
runs in a subprocess and is killed with SIGKILL.

Every scenario ends by re-running the same call to completion and comparing the store with one
that ingested the same files without interruption.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from builders import (
    CHIYODA,
    SAPPORO,
    SHIBUYA,
    Municipality,
    my_number,
    person,
    resident_code,
    row,
    write_csv,
)

from engine.current import scan_current
from engine.store import DERIVED, Store
from loaders.ingest import ingest_files

_BIN = Path(sys.executable).parent / "juki"
JUKI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "engine.cli"]
RESIDENTS = 3000
ARRIVALS = ("applied", "rejected", "held", "duplicate")


# -- the month of notifications --------------------------------------------------------------------
def _bad_check_digit(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def month_files(directory: Path, n: int = RESIDENTS) -> list[str]:
    """Four files that exercise every outcome: registration, changes with rejects, duplicates,
    rows held in one file and released by the next, cancellations, deaths and a gap that stays."""
    chi, sap, shi = Municipality(CHIYODA), Municipality(SAPPORO), Municipality(SHIBUYA)
    half, k = n // 2, n // 15

    def home(i: int, **over: Any) -> dict[str, Any]:
        sapporo = {"address": "北海道札幌市中央区北1条西2丁目"} if i >= half else {}
        return person(i, **{**sapporo, **over})

    shibuya = {"municipality_code": SHIBUYA, "address": "東京都渋谷区宇田川町1"}
    registration = [row(chi if i < half else sap, "A4", "2024-01-01", home(i)) for i in range(n)]
    registration += [
        row(chi, "A4", "2024-01-01",
            person(50_000 + i, resident_code=_bad_check_digit(resident_code(50_000 + i))))
        for i in range(20)
    ]  # fmt: skip
    moves = [row(chi, "M1", "2024-02-01", person(i, address=f"東京都千代田区丸の内{i}"))
             for i in range(4 * k)]  # fmt: skip
    changes1 = moves + [row(chi, "D1", "2024-02-03", person(i)) for i in range(4 * k, 6 * k)]
    changes1 += [row(sap, "M2", "2024-02-04", home(i, surname="佐藤", surname_kana="サトウ"))
                 for i in range(half, half + 4 * k)]  # fmt: skip
    changes1 += [row(chi, "M1", "2024-02-05", person(60_000 + i)) for i in range(20)]
    shi.seq = k  # Shibuya's seqs k+1 … 2k arrive first: held until the next file fills 1 … k
    changes1 += [row(shi, "A2", "2024-02-10", person(i, **shibuya)) for i in range(5 * k, 6 * k)]
    shi.seq = 0
    changes2 = [row(shi, "A2", "2024-02-09", person(i, **shibuya)) for i in range(4 * k, 5 * k)]
    changes2 += [
        row(chi, "X1", "2024-02-20", {"resident_code": resident_code(i), "my_number": my_number(i)},
            cancels_municipality_code=CHIYODA, cancels_seq=moves[i]["seq"])
        for i in range(k // 2)
    ]  # fmt: skip
    changes2 += [row(sap, "D3", "2024-02-21", home(i)) for i in range(half + 4 * k, half + 5 * k)]
    changes2 += [row(sap, "M1", "2024-02-22", home(i))  # after a death: rejected
                 for i in range(half + 4 * k, half + 4 * k + k // 2)]  # fmt: skip
    changes2 += [row(chi, "M4", "2024-02-23", person(i, my_number=my_number(100_000 + i)))
                 for i in range(6 * k, 7 * k)]  # fmt: skip
    changes2 += changes1[:50]  # re-sent rows: duplicates
    chi.seq += 1  # a gap nobody fills: what follows stays held
    changes3 = [row(chi, "M2", "2024-03-01", person(i, surname="鈴木", surname_kana="スズキ"))
                for i in range(7 * k, 7 * k + k // 2)]  # fmt: skip
    changes3 += [row(sap, "M1", "2024-03-02", home(i, address=f"北海道札幌市北区{i}"))
                 for i in range(half + 5 * k, n)]  # fmt: skip
    changes3 += [row(sap, "A1", "2024-03-03", home(70_000 + i, birth_date="2024-03-01"))
                 for i in range(k)]  # fmt: skip
    names = ["registration.csv", "changes-1.csv", "changes-2.csv", "changes-3.csv"]
    for name, rows in zip(names, [registration, changes1, changes2, changes3], strict=True):
        write_csv(directory / name, rows)
    return names


@dataclass(frozen=True)
class Month:
    directory: Path
    call: list[str]  # the files of one `juki ingest` call, in order (the last one re-sent)
    rows: dict[str, int]


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    directory = tmp_path_factory.mktemp("month")
    names = month_files(directory)
    rows = {name: pl.read_csv(directory / name, infer_schema=False).height for name in names}
    return Month(directory, [*names, names[0]], rows)


# -- running and killing juki ----------------------------------------------------------------------
def start_ingest(month: Month, store: Path, files: list[str] | None = None,
                 stop_at: str | None = None) -> subprocess.Popen[str]:  # fmt: skip
    """`stop_at`: a fail point `name:n` (engine/faults.py) where the process freezes itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("JUKI_STORE", "JUKI_STOP_AT")}
    if stop_at:
        env["JUKI_STOP_AT"] = stop_at
    return subprocess.Popen(
        [*JUKI, "ingest", *(files or month.call), "--json", "--store", str(store)],
        cwd=month.directory, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def run_ingest(month: Month, store: Path) -> list[dict[str, Any]]:
    proc = start_ingest(month, store)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def run_juki(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*JUKI, *args], capture_output=True, text=True, timeout=180)


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def kill_when_stopped(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process once it froze itself at its fail point (it must not end first)."""
    stat = Path(f"/proc/{proc.pid}/stat")
    while proc.poll() is None and stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.001)
    assert proc.poll() is None, "the process ended before its fail point"
    kill(proc)


def wait_for_writer(proc: subprocess.Popen[str], store: Path) -> None:
    """Return once the process holds the store's writer lock (it names itself in the lock file)."""
    lock = store / ".writer.lock"
    while proc.poll() is None and not (lock.exists() and lock.stat().st_size > 0):
        time.sleep(0.0005)


def created_store(path: Path) -> Path:
    Store(path).ensure_tables()
    return path


# -- what a store holds ----------------------------------------------------------------------------
def snapshot(path: Path) -> dict[str, Any]:
    """The store's observable state, without stamps and internal keys that differ between runs."""
    store = Store(path)
    current = (
        scan_current(store)
        .collect()
        .drop("person", "written_batch", "written_order", "recorded_at")
        .sort("resident_code")
    )
    codes = pl.read_delta(str(path / "codes"))
    label = codes.filter(pl.col("kind") == 1).group_by("person").agg(holder=pl.col("code").min())
    codes = codes.join(label, on="person").select("kind", "code", "holder").sort("kind", "code")
    positions = pl.read_delta(str(path / "positions")).sort("municipality_code")
    held = pl.read_delta(str(path / "held")).drop("batch").sort("municipality_code", "seq")
    journal = pl.read_delta(str(path / "journal"))
    outcomes = (
        journal.filter(~pl.col("outcome").is_in(["duplicate", "file"]))
        .select("file", "row", "outcome", "rule", "municipality_code", "seq", "version")
        .sort(pl.all())
    )
    return {"current": current, "codes": codes, "positions": positions, "held": held,
            "outcomes": outcomes}  # fmt: skip


def assert_same_state(path: Path, expected: dict[str, Any]) -> None:
    actual = snapshot(path)
    for name, frame in expected.items():
        assert actual[name].equals(frame), f"{name} differs from the uninterrupted store"


def batch_counts(path: Path) -> list[tuple[str, dict[str, int]]]:
    """Per journal batch, in order: its file and the count of each outcome of its rows."""
    journal = pl.read_delta(str(path / "journal"))
    out = []
    for batch in sorted(journal["batch"].unique().to_list()):
        rows = journal.filter(pl.col("batch") == batch)
        files = rows.filter(pl.col("outcome") == "file")["file"].to_list()
        assert len(files) == 1, f"batch {batch} has {len(files)} file records"
        counts = rows.filter(pl.col("outcome") != "file")["outcome"].value_counts()
        out.append((files[0], dict(zip(counts["outcome"], counts["count"], strict=True))))
    return out


def expected_batches(
    month: Month, reference: Reference, rerun_after: int | None = None
) -> list[tuple[str, dict[str, int]]]:
    """(file, outcome counts) of each batch of one uninterrupted call, or of a call killed after
    `rerun_after` batches and then run again to completion (its first batches all duplicates)."""
    once = list(zip(month.call, reference.counts, strict=True))
    if rerun_after is None:
        return once
    again = [(f, {"duplicate": month.rows[f]}) for f in month.call[:rerun_after]]
    return once[:rerun_after] + again + once[rerun_after:]


def assert_whole_batches(path: Path, month: Month,
                         expected: list[tuple[str, dict[str, int]]]) -> int:  # fmt: skip
    """Every batch in the journal is one whole file, in call order, with one file record and the
    outcomes its rows have in the uninterrupted run; returns how many batches there are."""
    batches = batch_counts(path)
    assert len(batches) <= len(expected)
    journal = pl.read_delta(str(path / "journal"))
    for i, ((file, counts), (want_file, want_counts)) in enumerate(zip(batches, expected)):
        assert (file, counts) == (want_file, want_counts), f"batch {i + 1} is not whole"
        arrived = journal.filter((pl.col("batch") == i + 1) & (pl.col("file") == file)
                                 & pl.col("outcome").is_in(ARRIVALS))  # fmt: skip
        assert sorted(arrived["row"].unique()) == list(range(1, month.rows[file] + 1))
    return len(batches)


@dataclass(frozen=True)
class Reference:
    state: dict[str, Any]
    counts: list[dict[str, int]]  # per batch, in call order
    lines: list[dict[str, Any]]  # the --json lines
    seconds: float  # a whole run, from the start of the process
    working: float  # from taking the writer lock to the end
    path: Path


@pytest.fixture(scope="module")
def reference(month: Month, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    path = created_store(tmp_path_factory.mktemp("reference") / "store")
    started = time.perf_counter()
    proc = start_ingest(month, path)
    wait_for_writer(proc, path)
    locked = time.perf_counter()
    out, err = proc.communicate(timeout=180)
    ended = time.perf_counter()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    counts = [c for _, c in batch_counts(path)]
    return Reference(snapshot(path), counts, lines, ended - started, ended - locked, path)


# -- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "counted_from"),
                         [(1, "start"), (2, "start"), (3, "start"), (4, "lock"), (5, "lock"),
                          (6, "lock")])  # fmt: skip
def test_an_ingest_killed_at_a_random_moment_keeps_whole_batches_and_a_rerun_reaches_the_same_store(
    month: Month, reference: Reference, tmp_path: Path, seed: int, counted_from: str
) -> None:
    """Killed after a random delay up to a whole run, counted from the start of the process or
    (to land in the work rather than the imports) from the moment it takes the writer lock."""
    store = created_store(tmp_path / "store")
    proc = start_ingest(month, store)
    if counted_from == "lock":
        wait_for_writer(proc, store)
    span = reference.seconds if counted_from == "start" else reference.working
    time.sleep(random.Random(seed).uniform(0, span))
    kill(proc)

    committed = assert_whole_batches(store, month, expected_batches(month, reference))

    lines = run_ingest(month, store)
    assert [line["duplicate"] for line in lines[:committed]] == [
        month.rows[f] for f in month.call[:committed]
    ]
    assert_whole_batches(store, month, expected_batches(month, reference, committed))
    assert_same_state(store, reference.state)


@pytest.mark.parametrize("after_commits", [1, 3])
def test_a_kill_right_after_a_journal_commit_leaves_derived_tables_behind_until_the_next_writer(
    month: Month, reference: Reference, tmp_path: Path, after_commits: int
) -> None:
    store = created_store(tmp_path / "store")
    proc = start_ingest(month, store, stop_at=f"journal-commit:{after_commits}")
    kill_when_stopped(proc)

    committed = assert_whole_batches(store, month, expected_batches(month, reference))
    assert committed == after_commits
    head = Store(store).journal_head().batch
    assert all(Store(store).reflected_batch(t) < head for t in DERIVED if t != "current_base")

    run_ingest(month, store)
    assert_same_state(store, reference.state)
    assert all(Store(store).reflected_batch(t) == Store(store).journal_head().batch
               for t in DERIVED if t != "current_base")  # fmt: skip


def test_store_rebuild_of_a_store_whose_derived_tables_are_behind_matches_incremental_ingest(
    month: Month, reference: Reference, tmp_path: Path
) -> None:
    store = created_store(tmp_path / "store")
    proc = start_ingest(month, store, stop_at="journal-commit:3")
    kill_when_stopped(proc)
    committed = assert_whole_batches(store, month, expected_batches(month, reference))
    incremental = created_store(tmp_path / "incremental")
    cwd = Path.cwd()
    try:
        os.chdir(month.directory)  # the journal names files as given
        ingest_files(Store(incremental), month.call[:committed])
    finally:
        os.chdir(cwd)

    result = run_juki("store", "rebuild", "--store", str(store))

    assert result.returncode == 0, result.stderr
    assert_same_state(store, snapshot(incremental))


def test_store_rebuild_of_a_caught_up_store_changes_nothing(
    reference: Reference, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(reference.path, store)

    result = run_juki("store", "rebuild", "--store", str(store))

    assert result.returncode == 0, result.stderr
    assert_same_state(store, reference.state)


def test_a_kill_during_the_derived_catch_up_is_repaired_by_the_next_ingest(
    month: Month, reference: Reference, tmp_path: Path
) -> None:
    store = created_store(tmp_path / "store")
    proc = start_ingest(month, store, stop_at="derived-commit:1")  # codes catch up first
    kill_when_stopped(proc)

    assert_whole_batches(store, month, expected_batches(month, reference))
    run_ingest(month, store)
    assert_same_state(store, reference.state)


def test_two_ingests_started_at_once_leave_one_writer_and_a_consistent_store(
    month: Month, reference: Reference, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    procs = [start_ingest(month, store), start_ingest(month, store)]
    results = [(p.pid, *p.communicate(timeout=180), p.returncode) for p in procs]

    codes = sorted(r[3] for r in results)
    assert codes in ([0, 5], [0, 0])
    if codes == [0, 5]:
        (winner,) = [r for r in results if r[3] == 0]
        (loser,) = [r for r in results if r[3] == 5]
        lines = [line for line in loser[2].splitlines() if line.strip()]
        assert len(lines) == 1 and str(winner[0]) in lines[0], loser[2]
        assert loser[1] == ""
    else:  # they did not overlap: the second found every row already applied
        def duplicates(r: tuple[Any, ...]) -> int:
            return sum(json.loads(x)["duplicate"] for x in r[1].splitlines())

        second = max(results, key=duplicates)
        assert [json.loads(x)["applied"] for x in second[1].splitlines()] == [0] * len(month.call)
    assert_same_state(store, reference.state)


@pytest.mark.parametrize("table", ["journal", "held"])
def test_an_ingest_killed_while_creating_the_store_leaves_a_store_the_next_ingest_can_use(
    month: Month, reference: Reference, tmp_path: Path, table: str
) -> None:
    """SIGKILL while delta-rs creates a table leaves `<table>/_delta_log/` holding only its
    staging file `00000000000000000000.json#1` (observed by killing `juki ingest` the moment the
    directory appears). Nothing was committed, so the next ingest must find the store usable."""
    store = tmp_path / "store"
    if table != "journal":
        created_store(store)
        shutil.rmtree(store / table)
    log = store / table / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json#1").write_bytes(b'{"protocol":{"minReaderVersion"')

    proc = start_ingest(month, store, month.call[:1])
    out, err = proc.communicate(timeout=180)

    assert proc.returncode == 0, err
    assert [json.loads(x) for x in out.splitlines()] == reference.lines[:1]


def test_a_kill_in_the_middle_of_a_journal_commit_leaves_nothing_of_that_batch(
    month: Month, reference: Reference, tmp_path: Path
) -> None:
    """A commit killed half-way leaves its data file and the staging file of its log entry
    (`<version>.json#1`), never the entry itself: readers see the batches before it, and the
    rerun commits that version for real."""
    store = created_store(tmp_path / "store")
    cwd = Path.cwd()
    try:
        os.chdir(month.directory)
        ingest_files(Store(store), month.call[:2])
    finally:
        os.chdir(cwd)
    log = store / "journal" / "_delta_log"
    version = Store(store).delta("journal").version() + 1
    (log / f"{version:020d}.json#1").write_bytes(b'{"add":{"path":"part-00000-')
    shutil.copy(next((store / "journal").glob("*.parquet")),
                store / "journal" / "part-00000-orphan-c000.snappy.parquet")  # fmt: skip

    assert assert_whole_batches(store, month, expected_batches(month, reference)) == 2

    run_ingest(month, store)
    assert_whole_batches(store, month, expected_batches(month, reference, 2))
    assert_same_state(store, reference.state)
