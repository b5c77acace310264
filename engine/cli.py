"""The `juki` command line: a thin typer layer over `engine/` and `loaders/` (STYLE.md).

Every command parses options, calls one library function, renders the result; tables and
progress go to stderr unless a command was asked to print them, JSON to stdout. `main()` maps
`JukiError` to its SPEC §7 exit code and ends the process with `os._exit` (DESIGN.md hazard).
"""

from __future__ import annotations

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

from engine.errors import JukiError, UsageError

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


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, handed to library functions as `progress(done, total)`."""
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
    """The main job end to end: generate a population, ingest it month by month, summarise.

    Example: juki demo --residents 20000 --months 3 --store ./juki-store
    """
    from loaders.demo import run_demo

    def show(step: str, report: Any) -> None:
        err.print(f"[bold]{step}[/bold]: {report.total('applied'):,} applied, "
                  f"{report.total('rejected'):,} rejected, {report.total('duplicate'):,} "
                  f"duplicate, {report.total('held'):,} held in {report.seconds:.1f} s")  # fmt: skip

    result = run_demo(_store(store), samples=samples, residents=residents, months=months,
                      on_step=show)  # fmt: skip
    table = Table("measure", "value", title=f"juki demo — store {store}")
    for k, v in result.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    out.print(table)
    _line(f"demo done: store at {store}; try `juki store info --store {store}`")
    return 0


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

    rows = info(_store(store))
    if json_out:
        _json(rows)
        return 0
    table = Table("table", "version", "reflects journal", "rows", "files", "MiB")
    for r in rows:
        table.add_row(r["table"], str(r["version"]), str(r["reflects"]), f"{r['rows']:,}",
                      str(r["files"]), f"{r['bytes'] / 2**20:,.1f}")  # fmt: skip
    out.print(table)
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
    _line(f"rebuilt derived tables at journal version {version} ({store})")
    return 0


@store_app.command("compact")
def store_compact(store: StoreOpt = DEFAULT_STORE) -> int:
    """Merge the current table's delta into its base (run as a job, never inside ingest).

    Example: juki store compact --store ./juki-store
    """
    from engine.maintenance import compact

    s = _store(store)
    s.require()
    with s.writer("juki store compact"):
        version = compact(s)
    _line(f"compacted current at journal version {version} ({store})")
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


# -- entry point -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console script: run the app, map errors to exit codes, end with os._exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    code = 0
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
    except Exception as e:  # noqa: BLE001 - the one place a bug becomes one line, not a traceback
        if debug:
            traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"juki: internal error: {type(e).__name__}: {first} (rerun with --debug)",
              file=sys.stderr)  # fmt: skip
        code = 70
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
