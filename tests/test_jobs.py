"""Scheduled jobs (SPEC §5b) as a library: periods and their bounds, substitution, the jobs file,
and how a job's command is prepared (paths resolved against the jobs file's directory)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.main import get_command

from engine.cli import app
from engine.cli_jobs import _classifier
from engine.dates import JST, parse_timestamp
from engine.errors import InputRejected, UsageError
from engine.jobs import Job, load_jobs, parse_period, prepare, stamp, substitute

STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+09:00")
CLASSIFY = _classifier(get_command(app))
days = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(9998, 12, 1))


def week_of(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def text_of(day: dt.date, schedule: str) -> str:
    return {"daily": day.isoformat(), "weekly": week_of(day), "monthly": day.isoformat()[:7]}[
        schedule
    ]


# -- periods -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schedule", "text", "start", "end"),
    [
        ("daily", "2026-11-24", "2026-11-24T00:00:00+09:00", "2026-11-25T00:00:00+09:00"),
        ("daily", "2024-02-29", "2024-02-29T00:00:00+09:00", "2024-03-01T00:00:00+09:00"),
        ("daily", "2026-12-31", "2026-12-31T00:00:00+09:00", "2027-01-01T00:00:00+09:00"),
        ("weekly", "2026-W48", "2026-11-23T00:00:00+09:00", "2026-11-30T00:00:00+09:00"),
        ("weekly", "2026-W01", "2025-12-29T00:00:00+09:00", "2026-01-05T00:00:00+09:00"),
        ("weekly", "2026-W53", "2026-12-28T00:00:00+09:00", "2027-01-04T00:00:00+09:00"),
        ("monthly", "2026-11", "2026-11-01T00:00:00+09:00", "2026-12-01T00:00:00+09:00"),
        ("monthly", "2026-12", "2026-12-01T00:00:00+09:00", "2027-01-01T00:00:00+09:00"),
        ("monthly", "2024-02", "2024-02-01T00:00:00+09:00", "2024-03-01T00:00:00+09:00"),
    ],
)
def test_a_period_is_bounded_by_the_midnights_of_its_calendar_span_in_japan_time(
    schedule: str, text: str, start: str, end: str
) -> None:
    period = parse_period(text, schedule)  # type: ignore[arg-type]
    assert period.substitutions() == {"period": text, "period_start": start, "period_end": end}


FORMS = {"daily": "a day YYYY-MM-DD", "weekly": "an ISO week YYYY-Www", "monthly": "a month YYYY-MM"}


@pytest.mark.parametrize(
    ("schedule", "text"),
    [
        ("daily", "2026-11"), ("daily", "2026-W48"), ("daily", "2026-11-31"),
        ("daily", "2025-02-29"), ("daily", "26-11-24"), ("daily", "2026-11-24T00:00"),
        ("weekly", "2026-11-23"), ("weekly", "2025-W53"), ("weekly", "2026-W00"),
        ("weekly", "2026-w48"), ("weekly", "2026-W5"),
        ("monthly", "2026-13"), ("monthly", "2026-11-01"), ("monthly", "9999-12"),
        ("monthly", " 2026-11"), ("monthly", "2026-1"),
    ],
)  # fmt: skip
def test_a_period_of_the_wrong_form_is_a_usage_error(schedule: str, text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_period(text, schedule, job="j")  # type: ignore[arg-type]
    assert str(e.value) == f"--period '{text}': not {FORMS[schedule]} (job 'j' is {schedule})"
    assert e.value.exit_code == 2


@settings(max_examples=300, deadline=None)
@given(day=days, schedule=st.sampled_from(["daily", "weekly", "monthly"]))
def test_consecutive_periods_tile_time_without_gap_or_overlap(day: dt.date, schedule: str) -> None:
    period = parse_period(text_of(day, schedule), schedule)  # type: ignore[arg-type]
    following = parse_period(text_of(period.end.date(), schedule), schedule)  # type: ignore[arg-type]
    assert period.start < period.end == following.start
    assert period.start.date() <= day < period.end.date()
    assert period.text == text_of(day, schedule)  # the form given is the form written
    assert period.start.utcoffset() == dt.timedelta(hours=9)


@settings(max_examples=300, deadline=None)
@given(
    instant=st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1),
                         timezones=st.just(dt.UTC)),
    schedule=st.sampled_from(["daily", "weekly", "monthly"]),
)
def test_every_instant_is_in_exactly_one_period_start_excluded_end_included(
    instant: dt.datetime, schedule: str
) -> None:
    # The period holding t is the one whose calendar span holds the date of t - 1 µs (Japan time).
    day = (instant - dt.timedelta(microseconds=1)).astimezone(JST).date()
    period = parse_period(text_of(day, schedule), schedule)  # type: ignore[arg-type]
    before = parse_period(text_of(period.start.date() - dt.timedelta(days=1), schedule),
                          schedule)  # type: ignore[arg-type]  # fmt: skip
    after = parse_period(text_of(period.end.date(), schedule), schedule)  # type: ignore[arg-type]
    assert period.start < instant <= period.end
    assert not before.start < instant <= before.end
    assert not after.start < instant <= after.end


@settings(max_examples=200, deadline=None)
@given(day=days, schedule=st.sampled_from(["daily", "weekly", "monthly"]))
def test_period_bounds_are_written_to_the_second_and_read_back_as_the_same_instants(
    day: dt.date, schedule: str
) -> None:
    period = parse_period(text_of(day, schedule), schedule)  # type: ignore[arg-type]
    values = period.substitutions()
    for key, instant in (("period_start", period.start), ("period_end", period.end)):
        assert STAMP.fullmatch(values[key])
        # what `changes --since/--until` makes of the text (engine.dates) is the bound itself
        assert parse_timestamp(values[key]) == instant
    assert stamp(period.start) == values["period_start"]


def test_placeholders_are_substituted_inside_arguments_and_other_braces_are_kept() -> None:
    period = parse_period("2026-11", "monthly")
    assert substitute("out/jps-{period}.parquet", period) == "out/jps-2026-11.parquet"
    assert substitute("{period_start}", period) == "2026-11-01T00:00:00+09:00"
    assert substitute("{period_end}", period) == "2026-12-01T00:00:00+09:00"
    assert substitute("{period}/{period}", period) == "2026-11/2026-11"
    assert substitute("{}{period_x", period) == "{}{period_x"


# -- the jobs file -------------------------------------------------------------------------------
JOBS = """
[[job]]
name = "pension-monthly"            # unique
schedule = "monthly"                # daily | weekly | monthly: the form of --period
command = ["changes", "targets/jps.parquet", "--agency", "JPS", "--affair", "pension-change",
           "--since", "{period_start}", "--until", "{period_end}", "--out", "out/jps-{period}.parquet"]

[[job]]
name = "check-nightly"
schedule = "daily"
command = ["check", "--out", "out/check-{period}.parquet"]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_spec_example_loads(tmp_path: Path) -> None:
    jobs = load_jobs(write(tmp_path / "jobs.toml", JOBS), required=True)
    assert list(jobs) == ["pension-monthly", "check-nightly"]
    job = jobs["pension-monthly"]
    assert job.schedule == "monthly"
    assert job.command[:2] == ("changes", "targets/jps.parquet")
    assert job.jobs_file == (tmp_path / "jobs.toml").absolute()


def test_a_missing_default_jobs_file_means_no_jobs_and_a_missing_named_one_is_a_usage_error(
    tmp_path: Path,
) -> None:
    assert load_jobs(tmp_path / "store" / "jobs.toml", required=False) == {}
    with pytest.raises(UsageError) as e:
        load_jobs(tmp_path / "nope.toml", required=True)
    assert str(e.value) == f"--jobs {tmp_path / 'nope.toml'}: no such file"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[job]\nname=", "not a TOML file"),
        ("[[jobs]]\nname = 'a'", "unknown table or key 'jobs' (jobs are [[job]] tables)"),
        ("[[job]]\nschedule = 'daily'\ncommand = ['check']",
         "job 1: `name` must be a non-empty string"),
        ("[[job]]\nname = 'a'\nschedule = 'hourly'\ncommand = ['check']",
         "job 'a': `schedule` must be daily, weekly or monthly, not 'hourly'"),
        ("[[job]]\nname = 'a'\nschedule = 'daily'\ncommand = 'juki check'",
         "job 'a': `command` must be a non-empty list of strings (the arguments of juki)"),
        ("[[job]]\nname = 'a'\nschedule = 'daily'\ncommand = []",
         "job 'a': `command` must be a non-empty list of strings (the arguments of juki)"),
        ("[[job]]\nname = 'a'\nschedule = 'daily'\ncommand = ['check']\nshedule = 'x'",
         "job 1: unknown key 'shedule' (keys: name, schedule, command)"),
        ("[[job]]\nname = 'a'\nschedule = 'daily'\ncommand = ['check', '--out', 'c-{perod}.pq']",
         ("job 'a': command[2] 'c-{perod}.pq': unknown placeholder {perod} "
          "(use {period}, {period_start}, {period_end})")),
        (("[[job]]\nname = 'a'\nschedule = 'daily'\ncommand = ['check']\n"
          "[[job]]\nname = 'a'\nschedule = 'weekly'\ncommand = ['check']"),
         "job 2: name 'a' is not unique"),
    ],
)  # fmt: skip
def test_a_bad_jobs_file_is_rejected_naming_the_job_and_the_rule(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "jobs.toml", text)
    with pytest.raises(InputRejected) as e:
        load_jobs(path, required=False)
    assert str(e.value).startswith(f"{path.absolute()}: ")
    assert message in str(e.value)
    assert e.value.exit_code == 4


# -- preparing the command -----------------------------------------------------------------------
def job(tmp_path: Path, *command: str, schedule: str = "monthly") -> Job:
    return Job("j", schedule, tuple(command), tmp_path / "conf" / "jobs.toml")  # type: ignore[arg-type]


def test_paths_resolve_against_the_jobs_file_directory_and_other_arguments_stay(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "conf"
    spec = load_jobs(write(conf / "jobs.toml", JOBS), required=True)["pension-monthly"]
    run = prepare(spec, parse_period("2026-11", "monthly"), CLASSIFY)
    assert run.args == (
        "changes", str(conf / "targets/jps.parquet"), "--agency", "JPS", "--affair",
        "pension-change", "--since", "2026-11-01T00:00:00+09:00", "--until",
        "2026-12-01T00:00:00+09:00", "--out", str(conf / "out/jps-2026-11.parquet"),
    )  # fmt: skip
    assert run.outputs == (conf / "out/jps-2026-11.parquet",)
    assert run.cwd == conf


def test_absolute_paths_option_equals_forms_and_plots_are_understood(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    run = prepare(job(tmp_path, "stats", "--agency=JPS", "--affair", "statistics", "--date",
                      "2026-11-30", "--plot=pic/pyramid-{period}.png", "--out",
                      "/abs/stats.csv", "--format", "csv", "--by", "age5,sex"),
                  parse_period("2026-11", "monthly"), CLASSIFY)  # fmt: skip
    assert run.args == (
        "stats", "--agency", "JPS", "--affair", "statistics", "--date", "2026-11-30", "--plot",
        str(conf / "pic/pyramid-2026-11.png"), "--out", "/abs/stats.csv", "--format", "csv",
        "--by", "age5,sex",
    )  # fmt: skip
    assert run.outputs == (conf / "pic/pyramid-2026-11.png", Path("/abs/stats.csv"))


def test_a_file_pattern_expands_to_the_sorted_matching_files(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    for name in ("2026-11-2-13.csv", "2026-11-1-47.csv", "2026-11-1-01.csv", "2026-10-1-01.csv"):
        write(conf / "inbox" / name, "")
    spec = job(tmp_path, "ingest", "inbox/{period}-*.csv", "--rejects", "rejects/{period}",
               "--json")  # fmt: skip
    run = prepare(spec, parse_period("2026-11", "monthly"), CLASSIFY)
    inbox = conf / "inbox"
    assert run.args == ("ingest", str(inbox / "2026-11-1-01.csv"), str(inbox / "2026-11-1-47.csv"),
                        str(inbox / "2026-11-2-13.csv"), "--rejects",
                        str(conf / "rejects/2026-11"), "--json")  # fmt: skip
    assert run.outputs == ()
    nothing = prepare(spec, parse_period("2026-12", "monthly"), CLASSIFY)
    assert nothing.args[1] == str(inbox / "2026-12-*.csv")  # passed on: ingest reports it


def test_a_job_may_not_name_a_store(tmp_path: Path) -> None:
    for store in (["--store", "elsewhere"], ["--store=elsewhere"]):
        with pytest.raises(InputRejected) as e:
            prepare(job(tmp_path, "check", *store), parse_period("2026-11", "monthly"), CLASSIFY)
        assert "a job runs on the store of `juki job run`" in str(e.value)
        assert e.value.exit_code == 4


def test_an_unknown_command_or_option_is_left_for_the_command_to_report(tmp_path: Path) -> None:
    period = parse_period("2026-11", "monthly")
    assert prepare(job(tmp_path, "frobnicate", "x.csv"), period, CLASSIFY).args == (
        "frobnicate", "x.csv")  # fmt: skip
    assert prepare(job(tmp_path, "check", "--bogus", "x"), period, CLASSIFY).args == (
        "check", "--bogus", "x")  # fmt: skip
    assert prepare(job(tmp_path, "registry"), period, CLASSIFY).args == ("registry",)


def test_the_demo_jobs_are_valid_juki_commands(tmp_path: Path) -> None:
    from loaders.demo_jobs import JOBS

    root = get_command(app)
    jobs = load_jobs(write(tmp_path / "store" / "jobs.toml", JOBS.format(samples="../samples")),
                     required=True)  # fmt: skip
    assert list(jobs) == ["ingest-monthly", "check-nightly", "pension-monthly", "base-date-tokyo",
                          "population-pyramid", "push-daily"]  # fmt: skip
    for spec in jobs.values():
        period = parse_period({"daily": "2024-03-31", "monthly": "2024-03"}[spec.schedule],
                              spec.schedule)  # fmt: skip
        run = prepare(spec, period, CLASSIFY)
        cmd, args = root, list(run.args)
        while hasattr(cmd, "commands"):
            cmd = cmd.commands[args.pop(0)]
        cmd.make_context(spec.name, args)  # parses: unknown options or bad values raise
    push = prepare(jobs["push-daily"], parse_period("2024-03-31", "daily"), CLASSIFY)
    assert push.args[push.args.index("--outbox") + 1] == str(tmp_path / "store" / "outputs" / "push")
