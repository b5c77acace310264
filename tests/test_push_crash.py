"""A push run that crashes at any point neither skips nor duplicates a delivery (SPEC §5a, DESIGN
Safety): the next run completes a run whose file is in the outbox (same id, same file) or redoes
one that left no file, and the outbox bytes, provision records, request rows and watermarks end
up exactly as after a run that was never interrupted.

Crashes are made three ways: in-process at each named checkpoint (an exception nothing catches),
in a real `juki push run` killed with SIGKILL at a checkpoint (`JUKI_PUSH_CRASH_AT`), and killed
with SIGKILL after a random delay. Each scenario then reruns the run, ingests a later batch and
runs again, and compares the whole push state with the uninterrupted reference.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from agency import JUKI
from builders import my_number, person, resident_code, row, write_csv
from pushing import SAPPORO_HOME, T1, T2, World, everyone, outbox_bytes, subscribe
from stories import ingest_at

from engine.push import read_runs, run_id_of
from engine.store import Store
from loaders.push import run_push

STEP = T2 + dt.timedelta(hours=1)  # the run that crashes
LATER = dt.datetime(2024, 1, 25, tzinfo=dt.UTC)  # a batch recorded after it
LAST = LATER + dt.timedelta(hours=1)  # and the run after that


class Crash(BaseException):
    """Stands for a crash in-process: nothing in juki catches it."""


@dataclass(frozen=True)
class Scenario:
    before: Path  # the store just before STEP (its outbox inside)
    later: Path  # the batch ingested after STEP
    reference: dict[str, Any]  # the push state after STEP, the later batch and LAST
    seconds: float  # an uninterrupted `juki push run` in a process, start to end
    working: float  # of which from taking the push lock to the end


def push_state(store: Path) -> dict[str, Any]:
    """What a subscriber and an auditor can see of push: outbox bytes, provision records,
    push request rows, delivered runs (watermarks), and no leftover staging."""
    provisions = pl.read_delta(str(store / "provisions")).sort(pl.all())
    requests = (
        pl.read_delta(str(store / "requests"))
        .filter(pl.col("function") == "push")
        .drop("finished_at")
        .sort(pl.all())
    )
    runs = read_runs(Store(store), provided=True).drop("committed_at")
    staging = sorted(str(p) for p in (store / "push_staging").rglob("*") if p.is_file())
    return {"outbox": outbox_bytes(store / "outbox"), "provisions": provisions,
            "requests": requests, "runs": runs, "staging": staging}  # fmt: skip


def assert_same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual["staging"] == []
    assert actual["outbox"].keys() == expected["outbox"].keys()
    for name, data in expected["outbox"].items():
        assert actual["outbox"][name] == data, f"{name} differs"
    for table in ("provisions", "requests", "runs"):
        assert actual[table].equals(expected[table]), f"{table} differs"


def start_push(store: Path, at: dt.datetime, env: dict[str, str] | None = None,
               ) -> subprocess.Popen[str]:  # fmt: skip
    base = {k: v for k, v in os.environ.items() if k not in ("JUKI_STORE", "JUKI_PUSH_CRASH_AT")}
    return subprocess.Popen([*JUKI, "push", "run", "--now", at.isoformat(), "--store", str(store)],
                            env={**base, **(env or {})}, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip


def finish(store: Path, later: Path) -> dict[str, Any]:
    """Rerun STEP to completion, ingest the later batch, run LAST; the resulting push state."""
    run_push(Store(store), at=STEP)
    ingest_at(Store(store), later, LATER)
    run_push(Store(store), at=LAST)
    return push_state(store)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("push-crash")
    world = World(root)
    world.register()
    subscribe(world, everyone(), name="jps-daily")
    subscribe(world, [resident_code(n) for n in range(1, 7)], name="jps-weekly",
              interval="weekly", column="resident_code")  # fmt: skip
    subscribe(world, [*everyone(), my_number(103)], name="tokyo", agency="TOKYO")
    world.changes_batch()
    run_push(world.store, at=T1 + dt.timedelta(hours=1))
    world.move_six(T2)
    world.ingest([row(world.chiyoda, "M1", "2024-01-19", person(1, address="東京都千代田区5"))],
                 T2 + dt.timedelta(minutes=1))  # fmt: skip
    later = write_csv(root / "later.csv", [
        row(world.chiyoda, "M2", "2024-01-24", person(3, my_number=my_number(103),
                                                    surname="佐藤", surname_kana="サトウ")),
        row(world.sapporo, "D3", "2024-01-24", person(6, **{**SAPPORO_HOME, "address": "北海道札幌市北区6"})),
    ])  # fmt: skip
    before = root / "before"
    shutil.copytree(world.store.path, before)

    reference = root / "reference"
    shutil.copytree(before, reference)
    started = time.perf_counter()
    proc = start_push(reference, STEP)
    wait_for_lock(proc, reference)
    locked = time.perf_counter()
    _, err = proc.communicate(timeout=120)
    ended = time.perf_counter()
    assert proc.returncode == 0, err
    assert "3 run(s) delivered" in err
    ingest_at(Store(reference), later, LATER)
    run_push(Store(reference), at=LAST)
    return Scenario(before, later, push_state(reference), ended - started, ended - locked)


def copy(scenario: Scenario, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(scenario.before, store)
    return store


SLOW = pytest.mark.slow
POINTS = ["staged:1", pytest.param("staged:3", marks=SLOW), pytest.param("file:1", marks=SLOW),
          "file:2", pytest.param("file:3", marks=SLOW), pytest.param("manifest:2", marks=SLOW),
          "provisions", "requests",
          "runs", pytest.param("unstaged", marks=SLOW)]  # fmt: skip


@pytest.mark.parametrize("point", POINTS)
def test_a_run_crashing_at_a_checkpoint_is_completed_or_redone_by_the_next_run(
    scenario: Scenario, tmp_path: Path, point: str
) -> None:
    store = copy(scenario, tmp_path)
    name, _, nth = point.partition(":")
    seen = {"n": 0}

    def crash(reached: str) -> None:
        if reached == name:
            seen["n"] += 1
            if seen["n"] == int(nth or 1):
                raise Crash(point)

    with pytest.raises(Crash):
        run_push(Store(store), at=STEP, checkpoint=crash)

    assert_same(finish(store, scenario.later), scenario.reference)


@pytest.mark.parametrize("point", ["file:2", pytest.param("requests", marks=SLOW)])
def test_a_juki_process_killed_at_a_checkpoint_leaves_a_state_the_next_run_repairs(
    scenario: Scenario, tmp_path: Path, point: str
) -> None:
    store = copy(scenario, tmp_path)
    proc = start_push(store, STEP, env={"JUKI_PUSH_CRASH_AT": point})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL

    assert_same(finish(store, scenario.later), scenario.reference)


def wait_for_lock(proc: subprocess.Popen[str], store: Path) -> None:
    """Return once the process holds the push lock (it names itself in the lock file)."""
    lock = store / ".push.lock"
    while proc.poll() is None and not (lock.exists() and lock.stat().st_size > 0):
        time.sleep(0.0005)


def _killed_at_random(scenario: Scenario, tmp_path: Path, seed: int) -> None:
    """Killed after a random delay counted from the start of the process (odd seeds) or, to
    land in the work rather than the imports, from the moment it takes the push lock."""
    store = copy(scenario, tmp_path)
    proc = start_push(store, STEP)
    span = scenario.seconds
    if seed % 2 == 0:
        wait_for_lock(proc, store)
        span = scenario.working
    time.sleep(random.Random(seed).uniform(0, span))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=120)

    assert_same(finish(store, scenario.later), scenario.reference)


@pytest.mark.parametrize("seed", [pytest.param(1, marks=SLOW), 2])
def test_a_juki_process_killed_at_a_random_moment_neither_skips_nor_duplicates(
    scenario: Scenario, tmp_path: Path, seed: int
) -> None:
    _killed_at_random(scenario, tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 15))
def test_more_random_kills(scenario: Scenario, tmp_path: Path, seed: int) -> None:
    _killed_at_random(scenario, tmp_path, seed)


def test_a_run_that_left_no_file_never_happened(scenario: Scenario, tmp_path: Path) -> None:
    store = copy(scenario, tmp_path)

    def crash(reached: str) -> None:
        if reached == "staged":
            raise Crash(reached)

    with pytest.raises(Crash):
        run_push(Store(store), at=STEP, checkpoint=crash)
    later = STEP + dt.timedelta(hours=2)
    summary = run_push(Store(store), at=later)

    assert sorted(d.run_id for d in summary.delivered) == [run_id_of(later)] * 3
    assert not any(run_id_of(STEP) in name for name in outbox_bytes(store / "outbox"))


def test_a_completed_run_counts_as_its_periods_run(scenario: Scenario, tmp_path: Path) -> None:
    store = copy(scenario, tmp_path)

    def crash(reached: str) -> None:
        if reached == "provisions":
            raise Crash(reached)

    with pytest.raises(Crash):
        run_push(Store(store), at=STEP, checkpoint=crash)
    summary = run_push(Store(store), at=STEP + dt.timedelta(hours=2))  # the same Japan day

    assert [(d.run_id, d.completed) for d in summary.delivered] == [(run_id_of(STEP), True)] * 3
    runs = read_runs(Store(store)).filter(pl.col("run_at") > T2)
    assert runs["run_id"].to_list() == [run_id_of(STEP)] * 3
