"""Scheduled batch jobs (SPEC §5b): job definitions, periods, and the command a run executes.

A jobs file (TOML, `[[job]]` tables of `name`, `schedule`, `command`) names juki commands with
the placeholders `{period}`, `{period_start}`, `{period_end}`. `juki job run NAME --period P`
parses P in the form of the job's schedule, substitutes it, makes the command's paths absolute
against the jobs file's directory and runs it (`engine/job_runs.py` runs and records it).
"""

from __future__ import annotations

import datetime as dt
import glob
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.dates import JST
from engine.errors import InputRejected, UsageError

Schedule = Literal["daily", "weekly", "monthly"]
SCHEDULES: tuple[str, ...] = ("daily", "weekly", "monthly")
PLACEHOLDERS = ("period", "period_start", "period_end")
JOB_KEYS = ("name", "schedule", "command")

_FORMS = {
    "daily": (re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"), "a day YYYY-MM-DD"),
    "weekly": (re.compile(r"([0-9]{4})-W([0-9]{2})"), "an ISO week YYYY-Www"),
    "monthly": (re.compile(r"([0-9]{4})-([0-9]{2})"), "a month YYYY-MM"),
}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Job:
    """One `[[job]]` of a jobs file."""

    name: str
    schedule: Schedule
    command: tuple[str, ...]
    jobs_file: Path  # absolute: relative paths of the command resolve against its directory

    @property
    def directory(self) -> Path:
        return self.jobs_file.parent

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "schedule": self.schedule, "command": list(self.command),
                "jobs_file": str(self.jobs_file)}  # fmt: skip


@dataclass(frozen=True)
class Period:
    """A period of a schedule: the instants start < t ≤ end (Japan time).

    SPEC §5b: "the period holds the instants start < t ≤ end, like the window of `changes`"
    (since < recorded_at ≤ until). So a period is bounded by the two midnights (Japan time) of
    its calendar span: the day 2026-11-24 is start = 2026-11-24T00:00:00+09:00, end =
    2026-11-25T00:00:00+09:00; the week 2026-W48 runs from Monday 2026-11-23T00:00 to Monday
    2026-11-30T00:00; the month 2026-11 from 2026-11-01T00:00 to 2026-12-01T00:00. One period's
    end is the next one's start, so consecutive periods tile time with no gap and no overlap and
    a `changes --since {period_start} --until {period_end}` job sees every notification exactly
    once over successive periods. The one-instant shift against the calendar (the midnight
    opening a day belongs to the day before, the midnight closing it to the day) is the price
    of the window's open start; bounds written to the second that end at 23:59:59 would leave
    the last second of every day in no period.
    """

    text: str  # as given on the command line
    schedule: Schedule
    start: dt.datetime  # aware, Japan time
    end: dt.datetime

    def substitutions(self) -> dict[str, str]:
        return {"period": self.text, "period_start": stamp(self.start),
                "period_end": stamp(self.end)}  # fmt: skip


def stamp(instant: dt.datetime) -> str:
    """An instant as SPEC §5b writes period bounds: `YYYY-MM-DDTHH:MM:SS+09:00`."""
    return instant.astimezone(JST).strftime("%Y-%m-%dT%H:%M:%S+09:00")


def parse_period(text: str, schedule: Schedule, *, job: str = "") -> Period:
    """`--period` in the form of the schedule (daily `YYYY-MM-DD`, weekly `YYYY-Www` with
    weeks of ISO 8601 starting Monday, monthly `YYYY-MM`); any other form is a usage error."""
    pattern, form = _FORMS[schedule]
    match = pattern.fullmatch(text)
    try:
        if match is None:
            raise ValueError
        a, b = int(match.group(1)), int(match.group(2))
        if schedule == "daily":
            first = dt.date(a, b, int(match.group(3)))
            following = first + dt.timedelta(days=1)
        elif schedule == "weekly":
            first = dt.date.fromisocalendar(a, b, 1)
            following = first + dt.timedelta(days=7)
        else:
            first = dt.date(a, b, 1)
            following = dt.date(a + b // 12, b % 12 + 1, 1)
    except (ValueError, OverflowError):
        whose = f" (job '{job}' is {schedule})" if job else ""
        raise UsageError(f"--period '{text}': not {form}{whose}") from None
    return Period(text, schedule, _midnight(first), _midnight(following))


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=JST)


def substitute(argument: str, period: Period) -> str:
    """The argument with `{period}`, `{period_start}` and `{period_end}` replaced."""
    values = period.substitutions()
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), argument)


# -- the jobs file -------------------------------------------------------------------------------
def load_jobs(path: Path, *, required: bool) -> dict[str, Job]:
    """The jobs of a TOML file by name. A missing file is a usage error when it was named
    (`--jobs FILE`) and means no jobs when it is the default `<store>/jobs.toml` (SPEC §5b)."""
    path = path.absolute()
    if not path.is_file():
        if required:
            raise UsageError(f"--jobs {path}: no such file")
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputRejected.unreadable(path, f"not a TOML file ({e})") from None
    extra = [k for k in doc if k != "job"]
    if extra:
        raise InputRejected(f"{path}: unknown table or key '{extra[0]}' (jobs are [[job]] tables)")
    entries = doc.get("job", [])
    if not isinstance(entries, list):
        raise InputRejected(f"{path}: `job` must be an array of tables ([[job]])")
    jobs: dict[str, Job] = {}
    for i, entry in enumerate(entries, 1):
        job = _job(entry, f"{path}: job {i}", path)
        if job.name in jobs:
            raise InputRejected(f"{path}: job {i}: name '{job.name}' is not unique")
        jobs[job.name] = job
    return jobs


def _job(entry: object, where: str, path: Path) -> Job:
    if not isinstance(entry, dict):
        raise InputRejected(f"{where}: must be a table")
    unknown = [k for k in entry if k not in JOB_KEYS]
    if unknown:
        raise InputRejected(f"{where}: unknown key '{unknown[0]}' (keys: {', '.join(JOB_KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputRejected(f"{where}: `name` must be a non-empty string")
    where = f"{path}: job '{name}'"
    schedule = entry.get("schedule")
    if schedule not in SCHEDULES:
        raise InputRejected(f"{where}: `schedule` must be daily, weekly or monthly, "
                            f"not {schedule!r}")  # fmt: skip
    command = entry.get("command")
    if (not isinstance(command, list) or not command
            or not all(isinstance(a, str) for a in command)):  # fmt: skip
        raise InputRejected(f"{where}: `command` must be a non-empty list of strings "
                            "(the arguments of juki)")  # fmt: skip
    for k, argument in enumerate(command):
        for placeholder in _PLACEHOLDER.findall(argument):
            if placeholder not in PLACEHOLDERS:
                raise InputRejected(
                    f"{where}: command[{k}] '{argument}': unknown placeholder {{{placeholder}}} "
                    "(use {period}, {period_start}, {period_end})"
                )
    return Job(name, schedule, tuple(command), path)


def find_job(jobs: dict[str, Job], name: str, jobs_file: Path) -> Job:
    """The named job; an unknown job is a usage error (exit 2)."""
    if name in jobs:
        return jobs[name]
    if not jobs:
        where = f"{jobs_file} defines none" if jobs_file.is_file() else f"no jobs file {jobs_file}"
        raise UsageError(f"job '{name}': not defined ({where})")
    raise UsageError(f"job '{name}': not defined in {jobs_file} (jobs: {', '.join(jobs)})")


# -- the command of a run ------------------------------------------------------------------------
ArgRole = Literal["files", "path", "output", "store"]
# Given juki's arguments, the arguments (`--opt=value` split in two) and each one's role: a
# positional file argument, the value of a path option, of an output option (`--out`, `--plot`),
# the `--store` option itself, or None. `engine/cli_jobs.py` reads it off the command's own
# definition, so every command's path parameters are known without a list kept here.
Classify = Callable[[Sequence[str]], tuple[list[str], list[ArgRole | None]]]


@dataclass(frozen=True)
class Invocation:
    """The juki arguments a run executes and where: substituted, paths absolute."""

    args: tuple[str, ...]
    cwd: Path  # the jobs file's directory
    outputs: tuple[Path, ...]  # values of --out / --plot: what the run writes


def prepare(job: Job, period: Period, classify: Classify) -> Invocation:
    """Substitute the period, then make path arguments absolute against the jobs file's directory.

    Which arguments are paths comes from the command's definition (`classify`): positional file
    arguments and the values of path options (`--out`, `--plot`, `--rejects`, `--key-file`, …).
    A positional file argument with `*`, `?` or `[` is expanded to the matching files, sorted
    (no shell runs the command; without a match it is passed on and the command reports it).
    The command also runs in the jobs file's directory, so a relative path the definition does
    not declare resolves the same way. A job may not name `--store`: it runs on the store of
    `juki job run`.
    """
    args, roles = classify([substitute(a, period) for a in job.command])
    base = job.directory
    out: list[str] = []
    outputs: list[Path] = []
    for arg, role in zip(args, roles, strict=True):
        if role == "store":
            raise InputRejected(f"{job.jobs_file}: job '{job.name}': the command names {arg}; "
                                "a job runs on the store of `juki job run` (--store/JUKI_STORE)")  # fmt: skip
        if role is None:
            out.append(arg)
            continue
        path = base / arg
        if role == "files" and _GLOB.search(arg):
            matches = sorted(glob.glob(arg, root_dir=base))
            if matches:
                out.extend(str(base / m) for m in matches)
                continue
        out.append(str(path))
        if role == "output":
            outputs.append(path)
    return Invocation(tuple(out), base, tuple(outputs))
