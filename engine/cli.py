"""The `juki` command line: a thin typer layer over `engine/` and `loaders/` (STYLE.md).

Every command parses options, calls one library function, renders the result; tables and
progress go to stderr unless a command was asked to print them, JSON to stdout. `main()` maps
`JukiError` to its SPEC §7 exit code and ends the process with `os._exit` (DESIGN.md hazard).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.exceptions import Abort, Exit, TyperException
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.errors import JukiError, StoreUnavailable, UsageError
from engine.native_stderr import NativeStderr

app = typer.Typer(
    name="juki",
    help="juki — national identity-information store and batch query engine (住基ネット model).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
store_app = typer.Typer(help="Inspect and maintain the store's tables.", no_args_is_help=True)
held_app = typer.Typer(help="Rows held until their municipality's seq gap fills.",
                       no_args_is_help=True)  # fmt: skip
app.add_typer(store_app, name="store")
app.add_typer(held_app, name="held")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _line(text: str) -> None:
    """One plain line on stderr (errors: no markup, no wrapping)."""
    print(text, file=sys.stderr, flush=True)


def _json(obj: object) -> None:
    """One compact JSON value on stdout, written as is (no markup)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str))
    sys.stdout.write("\n")
    sys.stdout.flush()

StoreOpt = Annotated[
    Path,
    typer.Option("--store", envvar="JUKI_STORE", help="Store directory (env JUKI_STORE).",
                 show_default=True),  # fmt: skip
]
DEFAULT_STORE = Path("juki-store")


class EncodingChoice(str, Enum):
    utf8 = "utf-8"
    cp932 = "cp932"


class FileFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


def _store(path: Path) -> Any:
    from engine.store import Store

    return Store(path)


def _existing_store(path: Path, table: str | None = None) -> Any:
    """The store at `path` for a command that only reads it (or only its `table`): exit 5
    when there is none."""
    store = _store(path)
    store.require(table)
    return store


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, handed to library functions as `progress(done, total)`.

    Only on a terminal: batch jobs' stderr keeps just the summary line (a transient bar
    leaves an empty line behind when stderr is a file).
    """
    if not err.is_terminal:
        yield lambda done, total: None
        return
    columns = [TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn()]  # fmt: skip
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# -- ingest ------------------------------------------------------------------------------------
@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="Notification files (CSV or Parquet).")],
    rejects: Annotated[Path | None, typer.Option(help="Write DIR/<stem>.rejects.csv per file.")]
    = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per file on stdout.")]
    = False,
    encoding: Annotated[EncodingChoice | None, typer.Option(help="Force the CSV encoding.")]
    = None,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Apply change-notification files to the store, one atomic batch per file (SPEC §4).

    Example: juki ingest data/samples/demo/*.parquet --rejects rejects/ --json
    """
    from loaders.ingest import ingest_files

    def emit(result: Any) -> None:
        if hasattr(result, "error"):
            _line(result.error)
        if json_lines:
            _json(result.to_json())

    with _progress("ingest") as progress:
        report = ingest_files(
            _store(store), [str(f) for f in files], rejects_dir=rejects,
            encoding=encoding.value if encoding else None, progress=progress, on_file=emit,
        )  # fmt: skip
    if not json_lines:
        out.print(_ingest_table(report))
    _line(
        f"ingested {len(report.files)} file(s): {report.total('applied')} applied, "
        f"{report.total('rejected')} rejected, {report.total('duplicate')} duplicate, "
        f"{report.total('held')} held, {report.total('released')} released "
        f"in {report.seconds:.1f} s ({store})"
    )
    return int(report.exit_code)


def _ingest_table(report: Any) -> Table:
    table = Table("file", "applied", "rejected", "duplicate", "held", "released")
    for f in report.files:
        if hasattr(f, "error"):
            table.add_row(escape(f.file), "[red]unreadable[/red]", "", "", "", "")
        else:
            table.add_row(escape(f.file), *(str(getattr(f, k)) for k in
                                    ("applied", "rejected", "duplicate", "held", "released")))  # fmt: skip
    return table


# -- generate / demo ---------------------------------------------------------------------------
@app.command()
def generate(
    residents: Annotated[int, typer.Option(help="Initial population size.")] = 20_000,
    months: Annotated[int, typer.Option(help="Months of change notifications.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 1,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the files.")]
    = Path("data/samples/generated"),
    start: Annotated[str, typer.Option(help="Registration month of the initial population.")]
    = "2024-01",
    file_format: Annotated[FileFormat, typer.Option("--format", help="File format.")]
    = FileFormat.parquet,
) -> int:
    """Generate a synthetic population and its change notifications (per prefecture and month).

    Example: juki generate --residents 1000000 --months 12 --seed 7 --out /data/synthetic
    """
    from loaders.synthetic import generate as run

    with _progress("generate") as progress:
        summary = run(out_dir, residents=residents, months=months, seed=seed, start=start,
                      file_format=file_format.value, progress=progress)  # fmt: skip
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    _line(f"generated {summary.rows:,} rows in {len(summary.files)} files in "
              f"{summary.seconds:.1f} s ({rate:,.0f} rows/s) → {out_dir}")  # fmt: skip
    return 0


@app.command()
def demo(
    residents: Annotated[int, typer.Option(help="Initial population size.")] = 20_000,
    months: Annotated[int, typer.Option(help="Months of changes to ingest.")] = 3,
    samples: Annotated[Path, typer.Option(help="Where the generated files go.")]
    = Path("data/samples/demo"),
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """The main job end to end: generate a population, ingest it month by month (the last
    month as a cycle of scheduled jobs: ingest, check, pension changes, base-date, pyramid).

    Example: juki demo --residents 20000 --months 3 --store ./juki-store
    """
    from loaders.demo import run_demo

    failed: list[int] = []
    ran: list[str] = []

    def show(step: str, report: Any) -> None:
        err.print(f"[bold]{step}[/bold] (back-filled): {report.total('applied'):,} applied, "
                  f"{report.total('rejected'):,} rejected, {report.total('duplicate'):,} "
                  f"duplicate, {report.total('held'):,} held in {report.seconds:.1f} s")  # fmt: skip

    def job(line: Any) -> None:
        if not ran:
            err.print(f"[bold]the last month's cycle[/bold] as scheduled jobs (`juki job run`, "
                      f"jobs file {store / 'jobs.toml'}):")  # fmt: skip
        ran.append(line.job)
        if line.exit_code:
            failed.append(line.exit_code)
        _line(f"  {line.line or f'job {line.job} --period {line.period}: exit {line.exit_code}'}")

    result = run_demo(_store(store), samples=samples, residents=residents, months=months,
                      on_step=show, on_job=job)  # fmt: skip
    table = Table("measure", "value", title=f"juki demo — store {store}")
    for k, v in result.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    out.print(table)
    _line(f"demo done: store at {store}, job outputs in {store / 'outputs'}; try "
          f"`juki job history --store {store}` or `juki store info --store {store}`")  # fmt: skip
    return failed[0] if failed else 0


# -- store maintenance -------------------------------------------------------------------------
@store_app.command("info")
def store_info(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Show each table's Delta version, the journal version it reflects, rows and size.

    Example: juki store info --store ./juki-store
    """
    from engine.maintenance import store_info as info

    s = _store(store)
    rows = info(s)
    if json_out:
        _json(rows)
        return 0
    table = Table("table", "version", "reflects journal", "rows", "files", "MiB")
    for r in rows:
        table.add_row(r["table"], str(r["version"]),
                      "—" if r["reflects"] is None else str(r["reflects"]), f"{r['rows']:,}",
                      str(r["files"]), f"{r['bytes'] / 2**20:,.1f}")  # fmt: skip
    out.print(table)
    from engine.current import generations
    from engine.dates import iso_jst
    from engine.resolve import batch_stamp

    bases = [g for g in generations(s) if g.batch > 0]
    if bases:
        stamp = batch_stamp(s, bases[-1].batch)
        out.print(f"compacted bases on disk: {len(bases)}, the oldest as of journal batch "
                  f"{bases[-1].batch} ({iso_jst(stamp) if stamp else '—'}); as-of reads for "
                  f"earlier dates read the journal (`store compact --keep-bases`)")  # fmt: skip
    return 0


@store_app.command("rebuild")
def store_rebuild(store: StoreOpt = DEFAULT_STORE) -> int:
    """Recompute every derived table (current, codes, positions, held) from the journal.

    Example: juki store rebuild --store ./juki-store
    """
    from engine.maintenance import rebuild

    s = _store(store)
    s.require()
    with s.writer("juki store rebuild"):
        version = rebuild(s)
    _line(f"rebuilt derived tables at journal batch {version} ({store})")
    return 0


@store_app.command("compact")
def store_compact(
    keep_bases: Annotated[int, typer.Option(
        "--keep-bases", min=1,
        help="Compacted bases kept on disk, the new one included: extracts and change checks "
             "for a date before the newest base start from an older one (nightly: a month).",
    )] = 31,
    store: StoreOpt = DEFAULT_STORE,
) -> int:  # fmt: skip
    """Merge the current table's delta into its base and the journal's small files, rewrite
    the issued codes sorted for fast probes, and delete the files of bases older than the kept
    ones and those earlier compactions replaced (a scheduled job, never inside ingest).

    Example: juki store compact --keep-bases 31 --store ./juki-store
    """
    from engine.maintenance import compact

    s = _store(store)
    s.require()
    before = sum(s.sizes().values())
    with s.writer("juki store compact"):
        version = compact(s, keep_bases=keep_bases)
    after = sum(s.sizes().values())

    def size(n: int) -> str:
        return f"{n / 2**30:.2f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.1f} MiB"

    _line(f"compacted current and the journal, sorted the codes, at journal batch {version}; "
          f"store {size(after)} ({'+' if after >= before else '-'}{size(abs(after - before))}), "
          f"keeping the {keep_bases} newest bases ({store})")  # fmt: skip
    return 0


@held_app.command("list")
def held_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """List rows held until the seq gap of their municipality fills (SPEC §4).

    Example: juki held list --store ./juki-store --json
    """
    from engine.maintenance import held_rows

    s = _store(store)
    s.require()
    rows = held_rows(s)
    if json_out:
        _json(rows)
    else:
        table = Table("municipality_code", "seq", "waits for seq", "file", "row")
        for r in rows:
            table.add_row(r["municipality_code"], str(r["seq"]), str(r["waits_for"]), r["file"],
                          str(r["row"]))  # fmt: skip
        out.print(table)
    _line(f"{len(rows)} held row(s)")
    return 0


# -- agency services: registry, provision commands, audit (SPEC §5, §6) --------------------------
registry_app = typer.Typer(help="The agency/affair registry (SPEC §5).", no_args_is_help=True)
audit_app = typer.Typer(help="Provision records and requests (SPEC §6).", no_args_is_help=True)
extract_app = typer.Typer(help="Extracts for an affair (base date, region/age, milestone ages).",
                          no_args_is_help=True)  # fmt: skip
app.add_typer(registry_app, name="registry")
app.add_typer(audit_app, name="audit")
app.add_typer(extract_app, name="extract")

AgencyOpt = Annotated[str, typer.Option("--agency", help="Requesting agency (registry code).")]
AffairOpt = Annotated[str, typer.Option("--affair", help="Affair (事務) the agency acts for.")]
ColumnsOpt = Annotated[
    str | None, typer.Option("--columns", help="a,b,c: a subset of the affair's columns.")
]
OutOpt = Annotated[Path, typer.Option("--out", help="Output file (a manifest goes beside it).")]
FormatOpt = Annotated[FileFormat, typer.Option("--format", help="Output format.")]
OutEncodingOpt = Annotated[
    EncodingChoice, typer.Option("--encoding", help="CSV encoding (cp932: variants mapped, 〓).")
]
KnownAtOpt = Annotated[
    str | None,
    typer.Option("--known-at", help="Only notifications recorded up to this ISO 8601 instant "
                 "(Japan time without a zone): reproduces an earlier extract."),
]  # fmt: skip
PrefectureOpt = Annotated[
    list[str] | None, typer.Option("--prefecture", help="Prefecture code 01–47 (repeatable).")
]
MunicipalityOpt = Annotated[
    list[str] | None, typer.Option("--municipality", help="Municipality code (repeatable).")
]


def _requester(agency: str, affair: str, columns: str | None, out_file: Path,
               file_format: FileFormat, encoding: EncodingChoice) -> Any:  # fmt: skip
    from engine.dates import now_utc
    from loaders.outputs import OutputOptions
    from loaders.services import Requester

    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None
    output = OutputOptions(out_file, file_format.value, encoding.value)  # type: ignore[arg-type]
    return Requester(agency, affair, output, chosen, now_utc())


def _with(who: Any, progress: Callable[[int, int], None]) -> Any:
    """The requester with a progress bar attached."""
    import dataclasses

    return dataclasses.replace(who, progress=progress)


def _instant(text: str | None, option: str) -> Any:
    from engine.dates import parse_timestamp

    return None if text is None else parse_timestamp(text, option=option)


def _day(text: str | None, option: str, now: Any) -> Any:
    from engine.dates import japan_date, parse_date

    return japan_date(now) if text is None else parse_date(text, option=option)


def _provided(command: str, summary: Any) -> int:
    _line(f"{command}: {summary.rows:,} rows ({summary.recorded:,} provision records) in "
          f"{summary.seconds:.1f} s → {summary.path} (request {summary.request_id})")  # fmt: skip
    return 0


@registry_app.command("load")
def registry_load(
    file: Annotated[Path, typer.Argument(help="Registry TOML ([[agency]], [[affair]]).")],
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Load the agency/affair registry from a TOML file, replacing the current one (SPEC §5).

    Example: juki registry load registry.toml --store ./juki-store
    """
    from engine.access import load_registry
    from engine.dates import now_utc

    registry = load_registry(_store(store), file, now=now_utc())
    _line(f"registry loaded: {len(registry.agencies)} agencies, {len(registry.affairs)} affairs "
          f"from {file} ({store})")  # fmt: skip
    return 0


@registry_app.command("show")
def registry_show(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Show the loaded agencies and affairs.

    Example: juki registry show --json
    """
    from engine.access import read_registry

    registry = read_registry(_existing_store(store, "registry"))
    if json_out:
        _json(registry.to_json())
        return 0
    agencies = Table("agency", "name", "scope", "prefecture", title="agencies")
    for a in registry.agencies.values():
        agencies.add_row(escape(a.code), escape(a.name), a.scope, a.prefecture)
    affairs = Table("affair", "name", "agencies", "functions", "columns", "protected_access",
                    title="affairs")  # fmt: skip
    for f in registry.affairs.values():
        affairs.add_row(escape(f.code), escape(f.name), ", ".join(f.agencies),
                        ", ".join(f.functions), ", ".join(f.columns), str(f.protected_access))  # fmt: skip
    out.print(agencies)
    out.print(affairs)
    return 0


@app.command()
def lookup(
    file: Annotated[Path, typer.Argument(help="Request file with a my_number or resident_code column.")],
    agency: AgencyOpt,
    affair: AffairOpt,
    out_file: OutOpt,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Date read (default: today, Japan).")]
    = None,
    known_at: KnownAtOpt = None,
    columns: ColumnsOpt = None,
    file_format: FormatOpt = FileFormat.parquet,
    encoding: OutEncodingOpt = EncodingChoice.utf8,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Per-request lookup (都度照会): one row per request row, in order, with found/miss (SPEC §5).

    Example: juki lookup requests.csv --agency JPS --affair pension-change --out answer.parquet
    """
    from loaders.services import run_lookup

    who = _requester(agency, affair, columns, out_file, file_format, encoding)
    with _progress("lookup") as bar:
        summary = run_lookup(_store(store), file, _with(who, bar),
                             as_of=_day(as_of, "--as-of", who.now),
                             known_at=_instant(known_at, "--known-at"))  # fmt: skip
    return _provided("lookup", summary)


@app.command()
def changes(
    file: Annotated[Path, typer.Argument(help="Target file with a my_number or resident_code column.")],
    agency: AgencyOpt,
    affair: AffairOpt,
    out_file: OutOpt,
    since: Annotated[str, typer.Option("--since", help="Window start (exclusive), ISO 8601.")],
    until: Annotated[str | None, typer.Option("--until", help="Window end (inclusive); default "
                     "now, or the last recorded_at if later.")] = None,
    columns: ColumnsOpt = None,
    file_format: FormatOpt = FileFormat.parquet,
    encoding: OutEncodingOpt = EncodingChoice.utf8,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Periodic change check (定期照会): targets with notifications recorded in the window (SPEC §5).

    Example: juki changes targets.parquet --agency JPS --affair pension-change --since 2025-05-01 --until 2025-06-01 --out changes.parquet
    """
    from loaders.services import run_changes

    who = _requester(agency, affair, columns, out_file, file_format, encoding)
    with _progress("changes") as bar:
        summary = run_changes(_store(store), file, _with(who, bar),
                              since=_instant(since, "--since"), until=_instant(until, "--until"))  # fmt: skip
    return _provided("changes", summary)


def _region(prefecture: list[str] | None, municipality: list[str] | None) -> Any:
    from engine.extract import Region

    return Region(tuple(prefecture or ()), tuple(municipality or ()))


@extract_app.command("base-date")
def extract_base_date(
    agency: AgencyOpt,
    affair: AffairOpt,
    out_file: OutOpt,
    date: Annotated[str, typer.Option("--date", help="Base date YYYY-MM-DD.")],
    prefecture: PrefectureOpt = None,
    municipality: MunicipalityOpt = None,
    known_at: KnownAtOpt = None,
    columns: ColumnsOpt = None,
    file_format: FormatOpt = FileFormat.parquet,
    encoding: OutEncodingOpt = EncodingChoice.utf8,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Everyone registered on the base date (特定公的給付), optionally in a region (SPEC §5).

    Example: juki extract base-date --date 2020-04-27 --agency CITY --affair benefit --out base.parquet
    """
    from loaders.services import run_base_date

    who = _requester(agency, affair, columns, out_file, file_format, encoding)
    with _progress("extract") as bar:
        summary = run_base_date(_store(store), _with(who, bar),
                                date=_day(date, "--date", who.now),
                              known_at=_instant(known_at, "--known-at"),
                              region=_region(prefecture, municipality))  # fmt: skip
    return _provided("extract base-date", summary)


@extract_app.command("region-age")
def extract_region_age(
    agency: AgencyOpt,
    affair: AffairOpt,
    out_file: OutOpt,
    date: Annotated[str, typer.Option("--date", help="Date YYYY-MM-DD of residence and age.")],
    min_age: Annotated[int, typer.Option("--min-age", help="Youngest age (inclusive).")],
    max_age: Annotated[int, typer.Option("--max-age", help="Oldest age (inclusive).")],
    prefecture: PrefectureOpt = None,
    municipality: MunicipalityOpt = None,
    known_at: KnownAtOpt = None,
    columns: ColumnsOpt = None,
    file_format: FormatOpt = FileFormat.parquet,
    encoding: OutEncodingOpt = EncodingChoice.utf8,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Persons registered on the date in the region, aged --min-age to --max-age, plus `age`.

    Example: juki extract region-age --date 2025-04-01 --min-age 65 --max-age 74 --prefecture 13 --agency TOKYO --affair benefit --out elderly.parquet
    """
    from loaders.services import run_region_age

    who = _requester(agency, affair, columns, out_file, file_format, encoding)
    with _progress("extract") as bar:
        summary = run_region_age(_store(store), _with(who, bar),
                                 date=_day(date, "--date", who.now),
                              known_at=_instant(known_at, "--known-at"), min_age=min_age,
                              max_age=max_age, region=_region(prefecture, municipality))  # fmt: skip
    return _provided("extract region-age", summary)


@extract_app.command("milestone")
def extract_milestone(
    agency: AgencyOpt,
    affair: AffairOpt,
    out_file: OutOpt,
    month: Annotated[str, typer.Option("--month", help="Month YYYY-MM.")],
    ages: Annotated[str, typer.Option("--ages", help="Ages reached, e.g. 20,34,44,54.")],
    prefecture: PrefectureOpt = None,
    municipality: MunicipalityOpt = None,
    known_at: KnownAtOpt = None,
    columns: ColumnsOpt = None,
    file_format: FormatOpt = FileFormat.parquet,
    encoding: OutEncodingOpt = EncodingChoice.utf8,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Persons reaching one of the ages in the month (年齢到達), plus `age` and `reached_on`.

    Example: juki extract milestone --month 2026-11 --ages 20,34,44,54 --agency JPS --affair benefit --out milestone.parquet
    """
    from engine.dates import parse_month
    from engine.extract import parse_ages
    from loaders.services import run_milestone

    who = _requester(agency, affair, columns, out_file, file_format, encoding)
    parse_month(month)
    with _progress("extract") as bar:
        summary = run_milestone(_store(store), _with(who, bar), month=month,
                              ages=parse_ages(ages), known_at=_instant(known_at, "--known-at"),
                              region=_region(prefecture, municipality))  # fmt: skip
    return _provided("extract milestone", summary)


@app.command()
def stats(
    agency: AgencyOpt,
    affair: AffairOpt,
    date: Annotated[str, typer.Option("--date", help="Date YYYY-MM-DD of registration and age.")],
    by: Annotated[str, typer.Option("--by", help="Groups: any of prefecture,municipality,age5,sex.")]
    = "",
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw a population pyramid PNG.")]
    = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the counts to a file "
                        "(with a manifest) instead of printing a table.")] = None,
    known_at: KnownAtOpt = None,
    file_format: FormatOpt = FileFormat.parquet,
    encoding: OutEncodingOpt = EncodingChoice.utf8,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Counts of persons registered on the date per group, and a population pyramid (SPEC §5).

    Example: juki stats --date 2025-04-01 --by prefecture,age5,sex --agency JPS --affair statistics --plot pyramid.png
    """
    from engine.stats import parse_by
    from loaders.services import run_stats

    groups = parse_by(by)
    who = _requester(agency, affair, None, out_file or Path("stats.parquet"), file_format, encoding)
    with _progress("stats") as bar:
        summary = run_stats(_store(store), _with(who, bar), date=_day(date, "--date", who.now),
                            by=groups, known_at=_instant(known_at, "--known-at"), plot=plot,
                            to_file=out_file is not None)  # fmt: skip
    if summary.table is not None:
        table = Table(*summary.table.columns)
        for r in summary.table.iter_rows():
            table.add_row(*(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
                            for v in r))  # fmt: skip
        out.print(table)
    where = f" → {summary.path}" if summary.path else ""
    drawn = f", pyramid {plot}" if plot else ""
    _line(f"stats: {summary.rows:,} groups in {summary.seconds:.1f} s{where}{drawn} "
          f"(request {summary.request_id})")  # fmt: skip
    return 0


@audit_app.command("self")
def audit_self(
    my_number: Annotated[str, typer.Option("--my-number", help="Your My Number (12 digits).")],
    since: Annotated[str | None, typer.Option(help="From this instant (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this instant (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(help="Records per page.", min=1)] = 50,
    offset: Annotated[int, typer.Option(help="Records to skip (paging).", min=0)] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="A JSON array on stdout.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Your provision records (self-check), newest first, over every resident code you held.

    Example: juki audit self --my-number 123456789018 --limit 20 --json
    """
    from engine.provision import audit_self as run

    page = run(_store(store), my_number, since=_instant(since, "--since"),
               until=_instant(until, "--until"), limit=limit, offset=offset)  # fmt: skip
    if json_out:
        _json(page.to_json())
        return 0
    table = Table("provided_at", "agency", "affair", "function", "columns", "request_id",
                  "resident_code")  # fmt: skip
    for r in page.to_json():
        table.add_row(r["provided_at"], escape(r["agency"]), escape(r["affair"]), r["function"],
                      ", ".join(r["columns"]), r["request_id"], r["resident_code"])  # fmt: skip
    out.print(table)
    _line(f"{len(page.records)} record(s) from offset {offset}")
    return 0


@audit_app.command("compact")
def audit_compact(store: StoreOpt = DEFAULT_STORE) -> int:
    """Rewrite each bucket-year of provision records sorted by resident_code (a daily job).

    The records stay the same; a self-check then reads one file's row group, not many files.

    Example: juki audit compact --store ./juki-store
    """
    from engine.provision import compact

    s = _store(store)
    s.require()
    added = compact(s)
    _line(f"provision records compacted into {added} file(s) ({store})")
    return 0


@audit_app.command("requests")
def audit_requests(
    since: Annotated[str | None, typer.Option(help="After this instant (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this instant (ISO 8601).")] = None,
    agency: Annotated[str | None, typer.Option(help="Only this agency's requests.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many (newest first).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="A JSON array on stdout.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Requests newest first: who, what, when, rows, output hash; refusals included.

    Example: juki audit requests --agency JPS --json
    """
    from engine.dates import iso_jst
    from engine.requests import list_requests

    rows = list_requests(_existing_store(store), since=_instant(since, "--since"),
                         until=_instant(until, "--until"), agency=agency, limit=limit)  # fmt: skip
    for r in rows:
        for k in ("requested_at", "finished_at"):
            r[k] = iso_jst(r[k]) if r[k] is not None else None
        r["parameters"] = json.loads(r["parameters"]) if r["parameters"] else {}
    if json_out:
        _json(rows)
        return 0
    table = Table("requested_at", "request_id", "agency", "affair", "function", "status", "rows",
                  "output / reason", "sha256")  # fmt: skip
    for r in rows:
        detail = r["output"] if r["status"] == "provided" else r["refused_reason"]
        table.add_row(r["requested_at"], r["request_id"], escape(r["agency"]), escape(r["affair"]),
                      r["function"], r["status"], f"{r['rows']:,}", escape(detail or ""),
                      (r["output_sha256"] or "")[:16])  # fmt: skip
    out.print(table)
    _line(f"{len(rows)} request(s)")
    return 0


# -- consistency checks and issuance (SPEC §8, §2.4) ----------------------------------------------
codes_app = typer.Typer(help="Issue codes (SPEC §2.4): the resident-code pool, draws, My Numbers.",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(codes_app, name="codes")


class IssueKind(str, Enum):
    resident_code = "resident-code"
    my_number = "my-number"


@app.command()
def check(
    rules: Annotated[str | None, typer.Option(help="Comma-separated rule ids (default: all).")]
    = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Parquet report, one row per "
                                                  "rule and person.")] = None,  # fmt: skip
    json_out: Annotated[bool, typer.Option("--json", help="Summary as JSON on stdout.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Run the consistency checks of SPEC §8 over the whole store; exit 1 on any error.

    Example: juki check --rules code-shared,check-digit --out report.parquet --json
    """
    from engine.check import run_check, select_rules, write_report
    from engine.dates import japan_date, now_utc

    chosen = select_rules(rules.split(",")) if rules is not None else None
    with _progress("check") as progress:
        report = run_check(_store(store), today=japan_date(now_utc()), rules=chosen,
                           progress=progress)  # fmt: skip
    if out_file is not None:
        write_report(report, out_file)
    if json_out:
        _json(report.to_json())
    table = Table("rule", "severity", "violations", title=f"juki check — {store}")
    for c in report.counts():
        style = "red" if c["count"] and c["severity"] == "error" else ""
        table.add_row(str(c["rule"]), str(c["severity"]),
                      f"[{style}]{c['count']:,}[/{style}]" if style else f"{c['count']:,}")  # fmt: skip
    err.print(table)
    _line(f"checked journal batch {report.journal_batch}: {report.violations.height:,} "
          f"violation(s), {report.errors:,} error(s) in {report.seconds:.1f} s"
          + (f" → {out_file}" if out_file is not None else ""))  # fmt: skip
    return report.exit_code


@codes_app.command("issue")
def codes_issue(
    kind: Annotated[IssueKind, typer.Option("--kind", help="resident-code: add to the pool; "
                                            "my-number: derive from resident codes.")],  # fmt: skip
    count: Annotated[int | None, typer.Option(help="resident-code: how many to add.")] = None,
    resident_codes: Annotated[Path | None, typer.Option(
        "--resident-codes", help="my-number: CSV/Parquet file with a resident_code column.")]
    = None,  # fmt: skip
    out_file: Annotated[Path | None, typer.Option("--out", help="my-number: output file "
                                                  "(resident_code, my_number).")] = None,  # fmt: skip
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="my-number: the key (else env JUKI_MYNUMBER_KEY; never stored).")]
    = None,  # fmt: skip
    json_out: Annotated[bool, typer.Option("--json", help="Summary as JSON on stdout.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Add new resident codes to the pool, or derive My Numbers from resident codes.

    Example: juki codes issue --kind resident-code --count 1000000
    (or: juki codes issue --kind my-number --resident-codes new.csv --out numbers.parquet)
    """
    s = _store(store)
    if kind is IssueKind.resident_code:
        from engine.issuance import issue_resident_codes

        if count is None:
            raise UsageError("--count: required with --kind resident-code")
        pool = issue_resident_codes(s, count=count)
        if json_out:
            _json(pool.to_json())
        _line(f"pooled {pool.issued:,} new resident codes in {pool.seconds:.1f} s; "
              f"{pool.unassigned:,} unassigned in the pool ({store})")  # fmt: skip
        return 0
    from loaders.issuance import issue_my_numbers_file

    if resident_codes is None or out_file is None:
        raise UsageError("--resident-codes and --out: required with --kind my-number")
    if key_file is not None:
        if not key_file.is_file():
            raise UsageError.missing_file(key_file)
        key = key_file.read_bytes().rstrip(b"\r\n")
    else:
        key = os.environ.get("JUKI_MYNUMBER_KEY", "").encode()
    if not key:
        raise UsageError("--key-file: required (or the environment variable JUKI_MYNUMBER_KEY)")
    written = issue_my_numbers_file(s, resident_codes, out_file, key=key)
    if json_out:
        _json(written.to_json())
    _line(f"derived My Numbers for {written.resident_codes:,} resident code(s): "
          f"{written.rows:,} rows → {out_file}")  # fmt: skip
    return 0


@codes_app.command("draw")
def codes_draw(
    municipality: Annotated[str, typer.Option(help="The municipality's local government code.")],
    count: Annotated[int, typer.Option(help="How many pooled codes to assign.")],
    alert_below: Annotated[int, typer.Option(help="Alert when the municipality's assigned but "
                                             "unused codes are fewer.")] = 1000,  # fmt: skip
    out_file: Annotated[Path | None, typer.Option("--out", help="File of the drawn codes "
                                                  "(resident_code).")] = None,  # fmt: skip
    json_out: Annotated[bool, typer.Option("--json", help="Summary as JSON on stdout.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Assign pooled resident codes to a municipality at random; alert when it runs low.

    Example: juki codes draw --municipality 131016 --count 5000 --out chiyoda-codes.csv
    """
    from engine.issuance import draw_resident_codes
    from loaders.issuance import write_codes

    drawn = draw_resident_codes(_store(store), municipality_code=municipality, count=count,
                                alert_below=alert_below)  # fmt: skip
    if out_file is not None:
        write_codes(drawn.codes, out_file)
    if json_out:
        _json(drawn.to_json())
    _line(f"assigned {drawn.drawn:,} resident codes to {municipality}; {drawn.unused:,} assigned "
          "and unused" + (f" → {out_file}" if out_file is not None else ""))  # fmt: skip
    if drawn.alert:
        _line(f"alert: municipality {municipality} has {drawn.unused:,} assigned-but-unused "
              f"resident codes, below {alert_below:,}")  # fmt: skip
    return 0


# -- push (SPEC §5a): the commands live in engine/cli_push.py -----------------------------------
from engine.cli_push import push_app, subscribe_app  # noqa: E402

app.add_typer(subscribe_app, name="subscribe")
app.add_typer(push_app, name="push")

# -- scheduled jobs (SPEC §5b): engine/cli_jobs.py ------------------------------------------------
from engine.cli_jobs import jobs_app  # noqa: E402

app.add_typer(jobs_app, name="job")


# -- entry point -------------------------------------------------------------------------------
def _store_named(args: list[str]) -> Path:
    """The store a command line names (--store, else JUKI_STORE, else the default)."""
    for i, a in enumerate(args):
        if a == "--store" and i + 1 < len(args):
            return Path(args[i + 1])
        if a.startswith("--store="):
            return Path(a.removeprefix("--store="))
    return Path(os.environ.get("JUKI_STORE") or DEFAULT_STORE)


_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _unforeseen(e: BaseException, args: list[str]) -> int:
    """An error no rule foresaw: exit 5 naming the file when the store turns out damaged
    (a data file overwritten, a log unreadable: SPEC §7) or a disk is full or read-only (the
    store unavailable), else an internal error (70)."""
    from engine.store import Store

    damage = None
    with contextlib.suppress(Exception):
        damage = Store(_store_named(args)).damage()
    if damage is not None:
        print(f"juki: store damaged: {damage}", file=sys.stderr)
        return StoreUnavailable.exit_code
    if isinstance(e, OSError) and e.errno in _CANNOT_WRITE:
        # a full or read-only disk: nothing half-written was committed (writes are atomic)
        where = f" ({e.filename})" if e.filename else ""
        print(f"juki: store unavailable: cannot write: {os.strerror(e.errno)}{where}; nothing "
              "was committed", file=sys.stderr)  # fmt: skip
        return StoreUnavailable.exit_code
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    print(f"juki: internal error: {type(e).__name__}: {first} (rerun with --debug)",
          file=sys.stderr)  # fmt: skip
    return 70


def main(argv: list[str] | None = None) -> None:
    """Console script: run the app, map errors to exit codes, end with os._exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    code = 0
    native = NativeStderr()
    if not debug:
        native.start()
    try:
        result = app(args=args, prog_name="juki", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except JukiError as e:
        if debug:
            traceback.print_exc()
        print(str(e), file=sys.stderr)
        code = e.exit_code
    except Exit as e:
        code = e.exit_code
    except TyperException as e:  # click's usage errors: bad option, missing argument
        if e.format_message():
            print(f"juki: {e.format_message()}", file=sys.stderr)
        code = UsageError.exit_code
    except (Abort, KeyboardInterrupt):
        print("juki: interrupted", file=sys.stderr)
        code = 130
    except BaseException as e:  # the one place a bug becomes one line
        # (Exception, and the panics of Rust libraries, which derive from BaseException)
        if isinstance(e, SystemExit | GeneratorExit):
            raise
        if debug:
            traceback.print_exc()
        code = _unforeseen(e, args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        native.stop()
    os._exit(code)


if __name__ == "__main__":
    main()
