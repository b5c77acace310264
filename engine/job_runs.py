"""Runs of scheduled jobs (SPEC §5b): the per-job lock, the command as a child process, and the
`job_runs` table that records every run.

`job_runs` is a Delta table of blind appends (no store writer lock: the command a job runs may
itself need that lock), two rows per run keyed by `run_id`: `running` when it starts, then
`succeeded` or `failed` when it ends; a run reads as its latest row. Two runs of one job never
overlap: `fcntl.flock` on `<store>/.jobs/<job>.lock`, held for the whole run and inherited by the
command, so even a runner killed mid-run keeps the lock until its command has ended. A run that
is still `running` when the next run of its job holds the lock therefore died; it is recorded as
failed, and its period runs again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa

import engine
from engine.dates import iso_jst
from engine.errors import StoreUnavailable
from engine.jobs import Invocation, Job, Period
from engine.store import Store

UTC_US = pa.timestamp("us", tz="UTC")
JOB_RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("job", pa.string()),
        pa.field("period", pa.string()),  # as given: 2026-11-24, 2026-W48, 2026-11
        pa.field("period_start", UTC_US),  # the period holds start < t ≤ end
        pa.field("period_end", UTC_US),
        pa.field("status", pa.string()),  # running | succeeded | failed
        pa.field("started_at", UTC_US),
        pa.field("ended_at", UTC_US),
        pa.field("exit_code", pa.int32()),
        pa.field("rows", pa.int64()),  # rows of the outputs written (their manifests)
        pa.field("outputs", pa.list_(pa.string())),  # files the run wrote (--out, --plot)
        pa.field("error", pa.string()),  # a failed run: the command's last stderr line
        pa.field("message", pa.string()),  # the command's last stderr line (its summary)
        pa.field("command", pa.list_(pa.string())),  # juki arguments as run
        pa.field("jobs_file", pa.string()),
        pa.field("log", pa.string()),  # the command's whole stderr
        pa.field("forced", pa.bool_()),
        pa.field("host", pa.string()),
        pa.field("pid", pa.int64()),  # of `juki job run`
        pa.field("recorded_at", UTC_US),  # when this row was written (latest row wins)
    ]
)
DIED = "the run ended without recording its end (its process died)"

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class JobRun:
    """A run as recorded: its latest row."""

    run_id: str
    job: str
    period: str
    period_start: dt.datetime
    period_end: dt.datetime
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    exit_code: int | None = None
    rows: int | None = None
    outputs: tuple[str, ...] = ()
    error: str | None = None
    message: str | None = None
    command: tuple[str, ...] = ()
    jobs_file: str = ""
    log: str = ""
    forced: bool = False
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @property
    def seconds(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()

    def to_row(self, recorded_at: dt.datetime) -> dict[str, Any]:
        row = {f: getattr(self, f) for f in JOB_RUNS_SCHEMA.names if f != "recorded_at"}
        row.update(outputs=list(self.outputs), command=list(self.command), recorded_at=recorded_at)
        return row

    def to_json(self) -> dict[str, Any]:
        """The run as `juki job history --json` prints it (instants in Japan time)."""
        return {
            "job": self.job, "period": self.period, "status": self.status,
            "started_at": iso_jst(self.started_at),
            "ended_at": iso_jst(self.ended_at) if self.ended_at else None,
            "exit_code": self.exit_code, "rows": self.rows, "outputs": list(self.outputs),
            "error": self.error, "message": self.message, "run_id": self.run_id,
            "period_start": iso_jst(self.period_start), "period_end": iso_jst(self.period_end),
            "command": list(self.command), "jobs_file": self.jobs_file, "log": self.log,
            "forced": self.forced, "host": self.host, "pid": self.pid,
        }  # fmt: skip


@dataclass(frozen=True)
class RunOutcome:
    """What `juki job run` did: ran the command (`run` is the new run), or nothing because the
    period already succeeded (`run` is that earlier run)."""

    run: JobRun
    skipped: bool

    @property
    def exit_code(self) -> int:
        return 0 if self.skipped else int(self.run.exit_code or 0)


# -- the table -----------------------------------------------------------------------------------
def _table(store: Store) -> Path:
    return store.table_path("job_runs")


def _record(store: Store, run: JobRun, clock: Clock) -> None:
    from engine.appends import append

    rows = pa.Table.from_pylist([run.to_row(clock())], schema=JOB_RUNS_SCHEMA)
    append(_table(store), rows)


def read_runs(store: Store, job: str | None = None) -> list[JobRun]:
    """Every run recorded in the store (of one job, if named), oldest first, as its latest row.

    A run still `running` whose process is gone (no live holder of its job's lock) reads as
    failed: it died before recording its end.
    """
    return [_as_known(store, r) for r in _recorded(store, job)]


def _recorded(store: Store, job: str | None) -> list[JobRun]:
    """Each run's latest row, oldest run first, as recorded."""
    root = _table(store)
    if not (root / "_delta_log").is_dir():
        return []
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    table = DeltaTable(str(root)).to_pyarrow_table()
    if job is not None:
        table = table.filter(pc.equal(table["job"], job))
    latest: dict[str, dict[str, Any]] = {}
    for row in table.sort_by([("recorded_at", "ascending")]).to_pylist():
        latest[row["run_id"]] = row
    runs = [_run(r) for r in latest.values()]
    runs.sort(key=lambda r: (r.started_at, r.run_id))
    return runs


def _run(row: dict[str, Any]) -> JobRun:
    values = {k: v for k, v in row.items() if k != "recorded_at"}
    values.update(outputs=tuple(row["outputs"] or ()), command=tuple(row["command"] or ()))
    return JobRun(**values)


def _as_known(store: Store, run: JobRun) -> JobRun:
    if run.status != "running" or _alive(lock_path(store, run.job), run.run_id):
        return run
    return replace(run, status="failed", error=DIED)


# -- the per-job lock ----------------------------------------------------------------------------
def lock_path(store: Store, job: str) -> Path:
    return store.path / ".jobs" / f"{quote(job, safe='')}.lock"


def _alive(path: Path, run_id: str) -> bool:
    """Whether the holder named in a job's lock file runs `run_id` and lives (this host)."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return False
    if holder.get("run") != run_id:
        return False
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell from here: trust the record
    return any(_process_alive(p) for p in (holder.get("pid"), holder.get("child")))


def _process_alive(pid: object) -> bool:
    """Whether a process runs (a zombie does not: it has closed its files, the lock included)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobLock:
    """The held lock of one job; the holder's description is kept in the lock file."""

    def __init__(self, fd: int, holder: dict[str, Any]) -> None:
        self.fd = fd
        self.holder = holder

    def note(self, **facts: Any) -> None:
        """Add facts (the run id, the command's pid) to the holder's description."""
        self.holder.update(facts)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(self.holder).encode(), 0)


@contextlib.contextmanager
def job_lock(store: Store, job: str, period: str, clock: Clock) -> Iterator[JobLock]:
    """Hold the job's lock; a second run of the job exits 5 naming the run in progress."""
    path = lock_path(store, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        os.close(fd)
        raise StoreUnavailable(f"job '{job}': a run is in progress ({_describe(text)}); two runs "
                               "of a job never overlap, try again when it ends") from None  # fmt: skip
    lock = JobLock(fd, {"job": job, "period": period, "pid": os.getpid(),
                        "host": socket.gethostname(), "since": iso_jst(clock())})  # fmt: skip
    try:
        lock.note()
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def _describe(text: str) -> str:
    try:
        h = json.loads(text)
    except ValueError:
        return text or "holder unknown"
    child = f", command pid {h['child']}" if h.get("child") else ""
    return (f"period {h.get('period')}, pid {h.get('pid')}{child} on {h.get('host')}, "
            f"since {h.get('since')}")  # fmt: skip


# -- a run ---------------------------------------------------------------------------------------
def juki_argv(args: tuple[str, ...] | list[str]) -> list[str]:
    """The command line of a juki command: this interpreter, juki's entry point.

    `-P` keeps the working directory (the jobs file's) off `sys.path`, so a directory named
    `engine` there cannot shadow juki; PYTHONPATH (see `juki_env`) finds this very juki.
    """
    return [sys.executable, "-P", "-m", "engine.cli", *args]


def juki_env(store: Store) -> dict[str, str]:
    """The environment of a juki command run for a job: this one, on the given store."""
    env = dict(os.environ)
    env["JUKI_STORE"] = str(store.path.absolute())
    package_root = str(Path(engine.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def run_job(
    store: Store,
    job: Job,
    period: Period,
    invocation: Invocation,
    *,
    force: bool = False,
    clock: Clock,
) -> RunOutcome:
    """Run the job's command for the period unless the period already succeeded (SPEC §5b).

    Under the job's lock: runs left `running` by a dead process are recorded as failed; a
    succeeded period is a no-op unless `force`; otherwise a `running` row, the command (on this
    store, in the jobs file's directory, its stderr kept in a log), and the finished row.
    """
    with job_lock(store, job.name, period.text, clock) as lock:
        runs = _recorded(store, job.name)
        for dead in (r for r in runs if r.status == "running"):  # we hold the lock: it died
            _record(store, replace(dead, status="failed", error=DIED), clock)
        done = [r for r in runs if r.period == period.text and r.status == "succeeded"]
        if done and not force:
            return RunOutcome(done[-1], skipped=True)
        started = clock()
        run_id = f"{started.astimezone(dt.UTC):%Y%m%dT%H%M%S%f}-{os.getpid()}"
        log = store.path.absolute() / "job_logs" / quote(job.name, safe="") / f"{period.text}.{run_id}.log"
        run = JobRun(run_id=run_id, job=job.name, period=period.text,
                     period_start=period.start, period_end=period.end, status="running",
                     started_at=started, command=invocation.args, jobs_file=str(job.jobs_file),
                     log=str(log), forced=force)  # fmt: skip
        lock.note(run=run_id)  # before the record: history reads a `running` run as alive
        _record(store, run, clock)
        before = _stats(invocation.outputs)
        code = _execute(invocation, store=store, log=log, lock=lock)
        message = _last_line(log)
        written = _written(invocation.outputs, before)
        finished = replace(
            run, status="succeeded" if code == 0 else "failed", ended_at=clock(), exit_code=code,
            rows=_rows(written, before), outputs=tuple(str(p) for p in written),
            message=message, error=None if code == 0 else (message or _no_message(code)),
        )  # fmt: skip
        _record(store, finished, clock)
        return RunOutcome(finished, skipped=False)


def _execute(invocation: Invocation, *, store: Store, log: Path, lock: JobLock) -> int:
    """Run the command to its end; its exit code (128 + n when killed by signal n).

    The child inherits the lock's descriptor (a flock belongs to the open file, so the lock
    holds until both have ended); SIGTERM sent to `juki job run` is passed on to it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as stderr:
        child = subprocess.Popen(
            juki_argv(invocation.args), cwd=invocation.cwd, env=juki_env(store),
            stdin=subprocess.DEVNULL, stderr=stderr, pass_fds=(lock.fd,),
        )  # fmt: skip
        with _passing_sigterm(child):
            # published once SIGTERM is passed on: who reads the child from the lock may signal
            lock.note(child=child.pid)
            try:
                code = child.wait()
            except KeyboardInterrupt:
                child.send_signal(signal.SIGINT)
                code = child.wait()
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def _passing_sigterm(child: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.terminate())
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _last_line(log: Path) -> str | None:
    """The last non-empty line of the command's stderr (its summary, or its error)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _no_message(code: int) -> str:
    if code > 128:
        with contextlib.suppress(ValueError):
            return f"the command was killed by {signal.Signals(code - 128).name}"
    return f"the command exited {code} without a message"


# -- what a run wrote ----------------------------------------------------------------------------
def _manifest(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        s = path.stat()
    except OSError:
        return None
    return (s.st_ino, s.st_mtime_ns, s.st_size)


def _stats(outputs: tuple[Path, ...]) -> dict[Path, tuple[int, int, int] | None]:
    """Identity of each output and its manifest before the run (written files are renamed
    into place, so a rewritten file has a new inode)."""
    return {p: _stat(p) for o in outputs for p in (o, _manifest(o))}


def _written(outputs: tuple[Path, ...], before: dict[Path, Any]) -> list[Path]:
    return [o for o in outputs if _stat(o) is not None and _stat(o) != before.get(o)]


def _rows(written: list[Path], before: dict[Path, Any]) -> int | None:
    """Rows of the files the run wrote: from each one's manifest written by this run (SPEC §5),
    else from a Parquet file's footer; None when no output says."""
    total: int | None = None
    for path in written:
        manifest = _manifest(path)
        rows = None
        if _stat(manifest) is not None and _stat(manifest) != before.get(manifest):
            with contextlib.suppress(OSError, ValueError):
                value = json.loads(manifest.read_text(encoding="utf-8")).get("rows")
                rows = value if isinstance(value, int) else None
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            with contextlib.suppress(OSError, pa.ArrowException):
                rows = pq.read_metadata(path).num_rows
        if rows is not None:
            total = (total or 0) + rows
    return total
