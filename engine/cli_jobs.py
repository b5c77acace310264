"""`juki job run|list|history` (SPEC §5b): the typer sub-app `engine/cli.py` registers as `job`.

A thin layer like `engine/cli.py`: options in, one call into `engine/jobs.py` and
`engine/job_runs.py`, the result rendered. It imports nothing from `engine.cli` (under
`python -m engine.cli` that module is `__main__`; importing it again would build a second app),
so it keeps its own two output helpers. The one thing only the CLI knows, which arguments of a
juki command are paths, it reads off the command's own definition (`_classifier`).
"""

from __future__ import annotations

import inspect
import json
import shlex
import sys
import typing
from pathlib import Path, PurePath
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from engine.jobs import ArgRole, Classify

jobs_app = typer.Typer(
    help="Scheduled batch jobs (SPEC §5b): run a job for a period, list the definitions, show "
    "the runs recorded in the store.",
    no_args_is_help=True,
)
out = Console(highlight=False, soft_wrap=True)
# Tables of runs carry paths and error lines: when stdout is a file or a pipe (cron, a log), do
# not squeeze them into 80 columns.
wide = out if out.is_terminal else Console(highlight=False, width=200)

StoreOpt = Annotated[
    Path,
    typer.Option("--store", envvar="JUKI_STORE", help="Store directory (env JUKI_STORE).",
                 show_default=True),
]
DEFAULT_STORE = Path("juki-store")
JobsOpt = Annotated[
    Path | None,
    typer.Option("--jobs", help="Jobs file (TOML, one job table each); default <store>/jobs.toml, "
                 "where a missing file means no jobs.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
OUTPUT_OPTIONS = ("--out", "--plot")  # path options whose files a run writes


def _line(text: str) -> None:
    """One plain line on stderr."""
    print(text, file=sys.stderr, flush=True)


def _json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str))
    sys.stdout.write("\n")
    sys.stdout.flush()


def _load(jobs: Path | None, store: Path) -> tuple[dict[str, Any], Path]:
    from engine.jobs import load_jobs

    path = (jobs if jobs is not None else store / "jobs.toml").absolute()
    return load_jobs(path, required=jobs is not None), path


@jobs_app.command("run")
def job_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job's name in the jobs file.")],
    period: Annotated[str, typer.Option("--period", help="YYYY-MM-DD (daily), YYYY-Www (weekly, "
                                        "ISO week from Monday) or YYYY-MM (monthly).")],
    jobs: JobsOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Run even if the period already "
                                        "succeeded.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Run a job for a period on this store, recorded in job_runs; exits with its command's code.

    The command gets {period}, {period_start} and {period_end} filled in and its relative paths
    resolved against the jobs file's directory. A succeeded period is a no-op unless --force; a
    failed one runs again; a second run of a job while one runs exits 5.

    Example: juki job run pension-monthly --period 2026-10 --jobs /etc/juki/jobs.toml
    """
    from engine.dates import now_utc
    from engine.job_runs import run_job
    from engine.jobs import find_job, parse_period, prepare
    from engine.store import Store

    defined, path = _load(jobs, store)
    job = find_job(defined, name, path)
    when = parse_period(period, job.schedule, job=job.name)
    invocation = prepare(job, when, _classifier(ctx.find_root().command))
    outcome = run_job(Store(store), job, when, invocation, force=force, clock=now_utc)
    run, head = outcome.run, f"job {name} --period {period}"
    if outcome.skipped:
        _line(f"{head}: already succeeded (run {run.run_id}); nothing to do (--force runs it "
              "again)")  # fmt: skip
    elif run.status == "succeeded":
        rows = f", {run.rows:,} rows" if run.rows is not None else ""
        wrote = f" → {', '.join(run.outputs)}" if run.outputs else f": {run.message or 'done'}"
        _line(f"{head}: succeeded in {run.seconds or 0:.1f} s{rows}{wrote} (run {run.run_id})")
    else:
        _line(f"{head}: failed with exit {run.exit_code} in {run.seconds or 0:.1f} s: "
              f"{run.error} (log {run.log})")  # fmt: skip
    return outcome.exit_code


@jobs_app.command("list")
def job_list(jobs: JobsOpt = None, json_out: JsonOpt = False,
             store: StoreOpt = DEFAULT_STORE) -> int:  # fmt: skip
    """Show the jobs a jobs file defines, with each one's last recorded run.

    Example: juki job list --jobs /etc/juki/jobs.toml
    """
    from engine.job_runs import read_runs
    from engine.store import Store

    defined, path = _load(jobs, store)
    last = {r.job: r for r in read_runs(Store(store))} if defined else {}
    if json_out:
        _json([{**j.to_json(), "last_run": last[n].to_json() if n in last else None}
               for n, j in defined.items()])  # fmt: skip
        return 0
    table = Table("job", "schedule", "command", "last run", title=f"jobs — {path}")
    for n, j in defined.items():
        r = last.get(n)
        table.add_row(escape(n), j.schedule, escape(shlex.join(j.command)),
                      f"{r.period} {r.status}" if r else "")  # fmt: skip
    wide.print(table)
    _line(f"{len(defined)} job(s) in {path}" if path.is_file() else f"no jobs: no file {path}")
    return 0


@jobs_app.command("history")
def job_history(
    name: Annotated[str | None, typer.Argument(help="Only this job's runs.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many runs (newest).", min=1)]
    = None,
    json_out: JsonOpt = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Show the runs recorded in the store, newest first, whatever jobs file defined them.

    Example: juki job history pension-monthly --limit 12 --json
    """
    from engine.dates import JST
    from engine.errors import StoreUnavailable
    from engine.job_runs import read_runs
    from engine.store import Store

    if not store.is_dir():
        raise StoreUnavailable(f"{store}: no juki store here")
    runs = list(reversed(read_runs(Store(store), name)))[:limit]
    if json_out:
        _json([r.to_json() for r in runs])
        return 0
    table = Table(*(Column(h, no_wrap=True) for h in ("started (JST)", "job", "period", "status")),
                  "exit", "rows", Column("outputs / error", overflow="fold"),
                  box=box.SIMPLE_HEAD)  # fmt: skip
    for r in runs:
        style = {"failed": "red", "running": "yellow"}.get(r.status, "")
        detail = r.error if r.status == "failed" else ", ".join(r.outputs) or (r.message or "")
        table.add_row(f"{r.started_at.astimezone(JST):%Y-%m-%d %H:%M}", escape(r.job), r.period,
                      f"[{style}]{r.status}[/{style}]" if style else r.status,
                      "" if r.exit_code is None else str(r.exit_code),
                      "" if r.rows is None else f"{r.rows:,}", escape(detail or ""))  # fmt: skip
    wide.print(table)
    _line(f"{len(runs)} run(s)" + (f" of job {name}" if name else ""))
    return 0


# -- which arguments of a juki command are paths -------------------------------------------------
def _classifier(root: Any) -> Classify:
    """Classify the arguments of a job's command by the command's own definition (click params
    and the annotations of its function): positional `Path` arguments are files, `Path` option
    values are paths (`--out`, `--plot`: outputs), `--store` is flagged. An unknown command or
    option is left alone for the command to report as a usage error."""

    def classify(args: typing.Sequence[str]) -> tuple[list[str], list[ArgRole | None]]:
        args = list(args)
        cmd, i = root, 0
        while hasattr(cmd, "commands") and i < len(args) and args[i] in cmd.commands:
            cmd, i = cmd.commands[args[i]], i + 1
        out_args: list[str] = args[:i]
        roles: list[ArgRole | None] = [None] * i
        if hasattr(cmd, "commands"):
            return args, [None] * len(args)
        paths = _path_parameters(cmd)
        options = {o: p for p in cmd.params if p.param_type_name == "option" for o in p.opts}
        positionals = [p for p in cmd.params if p.param_type_name == "argument"]
        k, only_positional = 0, False
        while i < len(args):
            arg, i = args[i], i + 1
            if not only_positional and arg == "--":
                only_positional = True
            elif not only_positional and arg.startswith("-") and arg != "-":
                key, eq, value = arg.partition("=")
                p = options.get(key)
                if p is None or p.is_flag or p.count:
                    pass
                else:
                    out_args.append(key)
                    roles.append("store" if p.name == "store" else None)
                    if not eq:
                        if i >= len(args):
                            continue
                        value, i = args[i], i + 1
                    role: ArgRole | None = None
                    if p.name in paths:
                        role = "output" if key in OUTPUT_OPTIONS else "path"
                    out_args.append(value)
                    roles.append(role)
                    continue
            else:
                p = positionals[k] if k < len(positionals) else None
                out_args.append(arg)
                roles.append("files" if p is not None and p.name in paths else None)
                if p is not None and p.nargs != -1:
                    k += 1
                continue
            out_args.append(arg)
            roles.append(None)
        return out_args, roles

    return classify


def _path_parameters(cmd: Any) -> set[str]:
    """Names of the command function's parameters annotated with a path type."""
    try:
        hints = typing.get_type_hints(inspect.unwrap(cmd.callback))
    except Exception:  # noqa: BLE001 - no annotations to read: no path parameters known
        return set()
    return {n for n, hint in hints.items() if n != "return" and _mentions_path(hint)}


def _mentions_path(hint: Any) -> bool:
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return True
    return any(_mentions_path(a) for a in typing.get_args(hint))
