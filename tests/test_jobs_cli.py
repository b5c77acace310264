"""`juki job run|list|history` as cron and systemd see them (SPEC §5b, §7): real processes, exit
codes, one stderr line, the runs recorded in the store.

The jobs file lives in `conf/`, the processes run from another directory: relative paths in a
job's command must resolve against the jobs file's directory, not the caller's.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from agency import NOW, REGISTRY
from builders import CHIYODA, Municipality, person, resident_code, row, write_csv

from engine.access import load_registry, read_registry
from engine.dates import JST
from engine.job_runs import DIED, JobRun, lock_path, read_runs
from engine.jobs import parse_period
from engine.store import Store

_BIN = Path(sys.executable).parent / "juki"
JUKI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "engine.cli"]
REPEATS = 3
JOBS = """
[[job]]
name = "registry-daily"
schedule = "daily"
command = ["registry", "load", "registry.toml"]

[[job]]
name = "registry-broken"
schedule = "daily"
command = ["registry", "load", "broken.toml"]

[[job]]
name = "ingest-monthly"
schedule = "monthly"
command = ["ingest", "inbox/{period}-*.csv", "--rejects", "rejects/{period}"]

[[job]]
name = "pension-monthly"
schedule = "monthly"
command = ["changes", "targets.csv", "--agency", "JPS", "--affair", "pension-change",
           "--since", "{period_start}", "--until", "{period_end}", "--out", "out/jps-{period}.parquet"]
"""


class Site:
    """A jobs file in `conf/`, a store, and a working directory elsewhere."""

    def __init__(self, root: Path) -> None:
        self.conf = root / "conf"
        self.store = root / "store"
        self.cwd = root / "elsewhere"
        for d in (self.conf, self.cwd):
            d.mkdir(parents=True)
        (self.conf / "registry.toml").write_text(REGISTRY, encoding="utf-8")
        self.jobs = self.conf / "jobs.toml"
        self.jobs.write_text(JOBS, encoding="utf-8")

    def juki(self, *args: Any, jobs: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["--jobs", str(self.jobs)] if jobs and args[:2] in (("job", "run"),
                                                                    ("job", "list")) else []  # fmt: skip
        return subprocess.run([*JUKI, *map(str, args), *extra, "--store", str(self.store)],
                              cwd=self.cwd, env=_env(), capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip

    def start(self, *args: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([*JUKI, *map(str, args), "--jobs", str(self.jobs), "--store",
                                 str(self.store)], cwd=self.cwd, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def runs(self, job: str | None = None) -> list[JobRun]:
        return read_runs(Store(self.store), job)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "JUKI_STORE"}


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- runs, no-ops, --force -----------------------------------------------------------------------
def test_a_run_is_recorded_and_rerunning_its_succeeded_period_is_a_noop_unless_forced(
    site: Site,
) -> None:
    first = site.juki("job", "run", "registry-daily", "--period", "2026-11-24")

    assert first.returncode == 0, first.stderr
    assert one_line(first).startswith("job registry-daily --period 2026-11-24: succeeded in ")
    # registry.toml beside the jobs file was loaded, though the process ran elsewhere
    assert set(read_registry(Store(site.store)).agencies) == {"JPS", "TOKYO", "CITY"}
    [run] = site.runs()
    assert (run.job, run.period, run.status, run.exit_code) == ("registry-daily", "2026-11-24",
                                                                "succeeded", 0)  # fmt: skip
    assert run.command == ("registry", "load", str(site.conf / "registry.toml"))
    assert run.started_at <= run.ended_at  # type: ignore[operator]
    assert run.message and run.message.startswith("registry loaded: 3 agencies")
    assert run.error is None
    period = parse_period("2026-11-24", "daily")
    assert (run.period_start, run.period_end) == (period.start, period.end)

    for _ in range(REPEATS - 1):
        again = site.juki("job", "run", "registry-daily", "--period", "2026-11-24")
        assert again.returncode == 0, again.stderr
        assert one_line(again) == (f"job registry-daily --period 2026-11-24: already succeeded "
                                   f"(run {run.run_id}); nothing to do (--force runs it again)")  # fmt: skip
    assert site.runs() == [run]

    forced = site.juki("job", "run", "registry-daily", "--period", "2026-11-24", "--force")
    assert forced.returncode == 0, forced.stderr
    assert [(r.period, r.status, r.forced) for r in site.runs()] == [
        ("2026-11-24", "succeeded", False), ("2026-11-24", "succeeded", True)]  # fmt: skip


def test_a_failed_run_exits_with_its_commands_code_and_its_period_runs_again(site: Site) -> None:
    broken = site.conf / "broken.toml"
    broken.write_text("[[agency]\ncode =", encoding="utf-8")

    for n in range(1, REPEATS + 1):
        result = site.juki("job", "run", "registry-broken", "--period", "2026-11-24")
        assert result.returncode == 4, result.stderr  # registry load: not a TOML file
        line = one_line(result)
        assert line.startswith("job registry-broken --period 2026-11-24: failed with exit 4 in ")
        assert f": {broken}: not a TOML file (" in line
        runs = site.runs("registry-broken")
        assert [(r.status, r.exit_code) for r in runs] == [("failed", 4)] * n
        assert runs[-1].error is not None and runs[-1].error.startswith(f"{broken}: not a TOML")
        assert Path(runs[-1].log).read_text(encoding="utf-8").strip().endswith(runs[-1].error)

    broken.write_text(REGISTRY, encoding="utf-8")  # the operator fixes the file
    fixed = site.juki("job", "run", "registry-broken", "--period", "2026-11-24")
    assert fixed.returncode == 0, fixed.stderr
    again = site.juki("job", "run", "registry-broken", "--period", "2026-11-24")
    assert "already succeeded" in one_line(again)
    assert [r.status for r in site.runs()] == ["failed"] * REPEATS + ["succeeded"]


def test_a_command_that_names_a_missing_file_fails_with_its_usage_exit_2(site: Site) -> None:
    (site.conf / "registry.toml").unlink()
    result = site.juki("job", "run", "registry-daily", "--period", "2026-11-24")
    assert result.returncode == 2
    assert one_line(result).endswith(f": {site.conf / 'registry.toml'}: no such file "
                                     f"(log {site.runs()[0].log})")  # fmt: skip
    assert [(r.status, r.exit_code) for r in site.runs()] == [("failed", 2)]


# -- usage errors --------------------------------------------------------------------------------
def test_an_unknown_job_a_wrong_period_and_a_missing_jobs_file_exit_2_recording_nothing(
    site: Site,
) -> None:
    cases = [
        (("job", "run", "nightly", "--period", "2026-11-24"),
         (f"job 'nightly': not defined in {site.jobs} (jobs: registry-daily, registry-broken, "
          "ingest-monthly, pension-monthly)")),
        (("job", "run", "registry-daily", "--period", "2026-11"),
         "--period '2026-11': not a day YYYY-MM-DD (job 'registry-daily' is daily)"),
        (("job", "run", "ingest-monthly", "--period", "2026-W48"),
         "--period '2026-W48': not a month YYYY-MM (job 'ingest-monthly' is monthly)"),
    ]  # fmt: skip
    for args, message in cases:
        result = site.juki(*args)
        assert (result.returncode, one_line(result)) == (2, message)
    missing = site.conf / "nope.toml"
    result = site.juki("job", "run", "registry-daily", "--period", "2026-11-24", "--jobs",
                       missing, jobs=False)  # fmt: skip
    assert (result.returncode, one_line(result)) == (2, f"--jobs {missing}: no such file")
    assert site.runs() == []


def test_without_jobs_the_default_file_in_the_store_is_used_and_a_missing_one_means_no_jobs(
    site: Site,
) -> None:
    default = site.store.absolute() / "jobs.toml"
    result = site.juki("job", "run", "registry-daily", "--period", "2026-11-24", jobs=False)
    assert (result.returncode, one_line(result)) == (
        2, f"job 'registry-daily': not defined (no jobs file {default})")  # fmt: skip
    listed = site.juki("job", "list", "--json", jobs=False)
    assert (listed.returncode, listed.stdout) == (0, "[]\n")

    site.store.mkdir()
    (site.store / "jobs.toml").write_text(JOBS, encoding="utf-8")
    (site.store / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    result = site.juki("job", "run", "registry-daily", "--period", "2026-11-24", jobs=False)
    assert result.returncode == 0, result.stderr
    assert site.runs()[0].command[-1] == str(default.parent / "registry.toml")
    listed = site.juki("job", "list", "--json", jobs=False)
    jobs = json.loads(listed.stdout)
    assert [j["name"] for j in jobs] == ["registry-daily", "registry-broken", "ingest-monthly",
                                         "pension-monthly"]  # fmt: skip
    assert jobs[0]["last_run"]["status"] == "succeeded"
    assert jobs[0]["command"] == ["registry", "load", "registry.toml"]


def test_a_bad_jobs_file_exits_4_naming_it(site: Site) -> None:
    site.jobs.write_text('[[job]]\nname = "x"\nschedule = "hourly"\ncommand = ["check"]\n',
                         encoding="utf-8")  # fmt: skip
    for args in (("job", "run", "x", "--period", "2026-11-24"), ("job", "list")):
        result = site.juki(*args)
        assert (result.returncode, one_line(result)) == (
            4, f"{site.jobs}: job 'x': `schedule` must be daily, weekly or monthly, not 'hourly'")  # fmt: skip


# -- what runs record: rows and outputs from the manifests --------------------------------------
def test_a_months_ingest_and_change_check_run_as_jobs_recording_rows_and_outputs(
    site: Site,
) -> None:
    chi = Municipality(CHIYODA)
    inbox = site.conf / "inbox"
    inbox.mkdir()
    write_csv(inbox / "2024-01-1-13.csv", [row(chi, "A4", "2024-01-01", person(i))
                                           for i in range(3)])  # fmt: skip
    write_csv(inbox / "2024-01-2-13.csv", [row(chi, "M1", "2024-01-20",
                                               person(0, address="東京都千代田区丸の内1"))])  # fmt: skip
    write_csv(inbox / "2024-02-1-13.csv", [row(chi, "A4", "2024-02-01", person(9))])
    pl.DataFrame({"resident_code": [resident_code(i) for i in (0, 1, 5)]}).write_csv(
        site.conf / "targets.csv")  # fmt: skip
    load_registry(Store(site.store), site.conf / "registry.toml", now=NOW)

    ingest = site.juki("job", "run", "ingest-monthly", "--period", "2024-01")

    assert ingest.returncode == 0, ingest.stderr
    line = one_line(ingest)
    assert line.startswith("job ingest-monthly --period 2024-01: succeeded in ")
    assert ": ingested 2 file(s): 4 applied, 0 rejected, 0 duplicate, 0 held, 0 released" in line
    [run] = site.runs("ingest-monthly")
    assert run.command[1:3] == (str(inbox / "2024-01-1-13.csv"), str(inbox / "2024-01-2-13.csv"))
    assert run.message is not None and run.message.startswith("ingested 2 file(s): 4 applied")
    assert (run.rows, run.outputs) == (None, ())  # ingest writes no output file
    # the change check for the month the notifications were recorded in (Japan time)
    recorded = Store(site.store).journal_head().recorded_at
    assert recorded is not None
    month = f"{recorded.astimezone(JST):%Y-%m}"

    check = site.juki("job", "run", "pension-monthly", "--period", month)

    assert check.returncode == 0, check.stderr
    out = site.conf / "out" / f"jps-{month}.parquet"
    assert one_line(check).endswith(f", 2 rows → {out} (run {site.runs('pension-monthly')[0].run_id})")
    [run] = site.runs("pension-monthly")
    assert (run.status, run.rows, run.outputs) == ("succeeded", 2, (str(out),))
    manifest = json.loads(Path(f"{out}.manifest.json").read_text(encoding="utf-8"))
    period = parse_period(month, "monthly")
    assert manifest["parameters"]["since"] == period.start.isoformat()
    assert manifest["parameters"]["until"] == period.end.isoformat()
    assert pl.read_parquet(out)["reasons"].to_list() == [["A4", "M1"], ["A4"]]


# -- never two runs of a job at once -------------------------------------------------------------
def holder(site: Site, job: str, *, timeout: float = 60) -> dict[str, Any]:
    """The lock holder's description once its command has started."""
    path = lock_path(Store(site.store), job)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            facts = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            facts = {}
        if facts.get("child"):
            return facts
        time.sleep(0.005)
    raise AssertionError(f"{job}: no run took the lock")


def stopped(pid: int, timeout: float = 5) -> bool:
    """Whether the process is stopped (signals are delivered asynchronously: wait for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in ("T", "t"):
            return True
        if state in ("Z", "X"):
            return False
        time.sleep(0.005)
    return False


def wait_until_free(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    fd = os.open(path, os.O_RDWR)
    try:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                time.sleep(0.02)
    finally:
        os.close(fd)
    raise AssertionError(f"{path} still locked")


def test_a_second_run_of_a_job_while_one_runs_exits_5_naming_the_run_in_progress(
    site: Site,
) -> None:
    first = site.start("job", "run", "registry-daily", "--period", "2026-11-24")
    facts = holder(site, "registry-daily")
    os.kill(first.pid, signal.SIGSTOP)  # the first run holds its lock for as long as we like
    try:
        assert facts["pid"] == first.pid
        for period in ("2026-11-24", "2026-11-25"):  # the same period or another
            second = site.juki("job", "run", "registry-daily", "--period", period)
            assert (second.returncode, one_line(second)) == (5, (
                f"job 'registry-daily': a run is in progress (period 2026-11-24, pid {first.pid}, "
                f"command pid {facts['child']} on {socket.gethostname()}, since {facts['since']}); "
                "two runs of a job never overlap, try again when it ends"))  # fmt: skip
        other = site.juki("job", "run", "registry-broken", "--period", "2026-11-24")
        assert other.returncode != 5  # another job is not blocked
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert [(r.job, r.status) for r in site.runs("registry-daily")] == [("registry-daily",
                                                                         "succeeded")]  # fmt: skip


def test_a_run_whose_process_died_counts_as_failed_and_its_period_runs_again(site: Site) -> None:
    runner = site.start("job", "run", "registry-daily", "--period", "2026-11-24")
    facts = holder(site, "registry-daily")
    command = int(facts["child"])
    os.kill(command, signal.SIGSTOP)
    if not stopped(command):
        runner.communicate(timeout=60)
        pytest.skip("the command ended before it could be stopped")  # pragma: no cover
    os.kill(runner.pid, signal.SIGKILL)
    runner.communicate(timeout=60)
    assert runner.returncode == -signal.SIGKILL
    # the command outlives its runner and still holds the job's lock: no overlap
    blocked = site.juki("job", "run", "registry-daily", "--period", "2026-11-24")
    assert blocked.returncode == 5, blocked.stderr
    [run] = site.runs()
    assert run.status == "running"

    os.kill(command, signal.SIGCONT)
    wait_until_free(lock_path(Store(site.store), "registry-daily"))
    [run] = site.runs()
    assert (run.status, run.error, run.exit_code) == ("failed", DIED, None)

    rerun = site.juki("job", "run", "registry-daily", "--period", "2026-11-24")

    assert rerun.returncode == 0, rerun.stderr
    assert [(r.status, r.error) for r in site.runs()] == [("failed", DIED), ("succeeded", None)]
    history = json.loads(site.juki("job", "history", "--json").stdout)
    assert [(h["status"], h["error"]) for h in history] == [("succeeded", None), ("failed", DIED)]


def test_sigterm_to_a_run_stops_its_command_and_records_the_run_failed(site: Site) -> None:
    runner = site.start("job", "run", "registry-daily", "--period", "2026-11-24")
    holder(site, "registry-daily")
    os.kill(runner.pid, signal.SIGTERM)  # systemctl stop, an orchestrator's timeout
    _, stderr = runner.communicate(timeout=60)
    [run] = site.runs()
    if run.status == "succeeded":  # pragma: no cover - the command ended first
        pytest.skip("the command ended before the signal")
    assert runner.returncode == 128 + signal.SIGTERM
    assert (run.status, run.exit_code, run.error) == ("failed", 143,
                                                      "the command was killed by SIGTERM")  # fmt: skip
    assert stderr.strip().endswith(f": the command was killed by SIGTERM (log {run.log})")


# -- history -------------------------------------------------------------------------------------
def test_history_shows_the_runs_recorded_in_the_store_whatever_jobs_file_defined_them(
    site: Site,
) -> None:
    (site.conf / "broken.toml").write_text("not toml [", encoding="utf-8")
    assert site.juki("job", "run", "registry-daily", "--period", "2026-11-24").returncode == 0
    assert site.juki("job", "run", "registry-broken", "--period", "2026-11-24").returncode == 4
    site.jobs.unlink()  # the definitions are gone; the runs stay in the store

    everything = site.juki("job", "history", "--json")
    one = site.juki("job", "history", "registry-broken")

    assert everything.returncode == one.returncode == 0
    runs = json.loads(everything.stdout)
    assert [(r["job"], r["status"], r["exit_code"]) for r in runs] == [
        ("registry-broken", "failed", 4), ("registry-daily", "succeeded", 0)]  # fmt: skip
    assert set(runs[0]) >= {"job", "period", "status", "started_at", "ended_at", "exit_code",
                            "rows", "outputs", "error"}  # fmt: skip
    assert runs[0]["period_start"] == "2026-11-24T00:00:00+09:00"
    assert runs[0]["period_end"] == "2026-11-25T00:00:00+09:00"
    assert "registry-broken" in one.stdout and "failed" in one.stdout
    assert "registry-daily" not in one.stdout
    assert one_line(one) == "1 run(s) of job registry-broken"
    nowhere = subprocess.run([*JUKI, "job", "history", "--store", str(site.cwd / "nowhere")],
                             env=_env(), capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert (nowhere.returncode, one_line(nowhere)) == (5, f"{site.cwd / 'nowhere'}: no juki store here")
