"""`juki subscribe …` and `juki push …` (SPEC §5a): thin typer sub-apps registered by engine/cli.py.

Shared helpers (progress bar, one-line output) come from engine/cli.py at call time, so this
module can be imported on its own. `JUKI_PUSH_CRASH_AT=point[:k]` (tests only) kills the process
with SIGKILL the k-th time `push run` reaches a checkpoint (staged, file, manifest, provisions,
requests, runs, unstaged): crashes at chosen moments, as a real crash would leave them.
"""

from __future__ import annotations

import os
import signal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

subscribe_app = typer.Typer(help="Push subscriptions: an agency's targets for an affair (SPEC §5a).",
                            no_args_is_help=True)  # fmt: skip
push_app = typer.Typer(help="Push-type change notification: runs, redelivery, catch-up (SPEC §5a).",
                       no_args_is_help=True)  # fmt: skip

StoreOpt = Annotated[
    Path, typer.Option("--store", envvar="JUKI_STORE", help="Store directory (env JUKI_STORE).")
]
DEFAULT_STORE = Path("juki-store")
SubscriptionOpt = Annotated[str, typer.Option("--subscription", "--name",
                                              help="The subscription's name.")]  # fmt: skip
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


class Interval(str, Enum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"


class FileFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


class EncodingChoice(str, Enum):
    utf8 = "utf-8"
    cp932 = "cp932"


def _store(path: Path) -> Any:
    from engine.store import Store

    return Store(path)


def _line(text: str) -> None:
    from engine.cli import _line as line

    line(text)


def _json(obj: object) -> None:
    from engine.cli import _json as emit

    emit(obj)


def _now() -> Any:
    from engine.dates import now_utc

    return now_utc()


def _subscribed(verb: str, sub: Any, store: Path) -> None:
    _line(f"subscribe {verb}: {sub.name} ({sub.agency}/{sub.affair}, {sub.interval}, "
          f"{sub.targets - sub.malformed:,} targets by {sub.kind}"
          + (f", {sub.malformed:,} malformed dropped" if sub.malformed else "")
          + f", watermark batch {sub.watermark}) ({store})")  # fmt: skip


@subscribe_app.command("add")
def subscribe_add(
    agency: Annotated[str, typer.Option("--agency", help="Subscribing agency (registry code).")],
    affair: Annotated[str, typer.Option("--affair", help="Affair; it must allow `push`.")],
    targets: Annotated[Path, typer.Option("--targets", help="CSV/Parquet file with a my_number "
                                          "or resident_code column.")],
    interval: Annotated[Interval, typer.Option("--interval", help="How often it is delivered.")],
    name: Annotated[str | None, typer.Option("--name", help="Unique name, never reused "
                                             "(default <agency>-<affair>-<n>).")] = None,
    json_out: JsonOpt = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Register a push subscription; changes applied from now on are delivered.

    Example: juki subscribe add --agency JPS --affair pension-change --targets jps.parquet --interval daily
    """
    from engine.subscriptions import add_subscription
    from loaders.push import read_targets

    s = _store(store)
    s.require()
    sub = add_subscription(s, read_targets(targets), agency=agency, affair=affair,
                           interval=interval.value, name=name, now=_now())  # fmt: skip
    if json_out:
        _json(sub.to_json())
    _subscribed("add", sub, store)
    return 0


@subscribe_app.command("targets")
def subscribe_targets(
    subscription: SubscriptionOpt,
    targets: Annotated[Path, typer.Option("--targets", help="CSV/Parquet file with a my_number "
                                          "or resident_code column.")],
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Replace a subscription's targets (its watermark stays).

    Example: juki subscribe targets --subscription JPS-pension-change-1 --targets jps-2025-06.parquet
    """
    from engine.subscriptions import replace_targets
    from loaders.push import read_targets

    sub = replace_targets(_store(store), subscription, read_targets(targets), now=_now())
    _subscribed("targets", sub, store)
    return 0


@subscribe_app.command("list")
def subscribe_list(
    all_: Annotated[bool, typer.Option("--all", help="Removed subscriptions too.")] = False,
    json_out: JsonOpt = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """List subscriptions with their targets, watermark and last run.

    Example: juki subscribe list --json
    """
    from engine.cli import _existing_store, out
    from loaders.push import subscription_rows

    rows = [r for r in subscription_rows(_existing_store(store)) if all_ or r["removed_at"] is None]
    if json_out:
        _json(rows)
        return 0
    table = Table("name", "agency", "affair", "interval", "targets", "kind", "watermark",
                  "runs", "last run", "removed")  # fmt: skip
    for r in rows:
        table.add_row(escape(r["name"]), escape(r["agency"]), escape(r["affair"]), r["interval"],
                      f"{r['targets'] - r['malformed']:,}", r["kind"], str(r["watermark"]),
                      str(r["runs"]), r["last_run"] or "", r["removed_at"] or "")  # fmt: skip
    out.print(table)
    _line(f"{len(rows)} subscription(s)")
    return 0


@subscribe_app.command("remove")
def subscribe_remove(subscription: SubscriptionOpt, store: StoreOpt = DEFAULT_STORE) -> int:
    """End a subscription (its name is never reused; its runs stay redeliverable).

    Example: juki subscribe remove --subscription JPS-pension-change-1
    """
    from engine.subscriptions import remove_subscription

    sub = remove_subscription(_store(store), subscription, now=_now())
    _line(f"subscribe remove: {sub.name} removed ({store})")
    return 0


def _crash_hook() -> Any:
    """SIGKILL at the k-th arrival at the checkpoint named by JUKI_PUSH_CRASH_AT (tests)."""
    spec = os.environ.get("JUKI_PUSH_CRASH_AT")
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    seen = {"count": 0}

    def hook(reached: str) -> None:
        if reached == point:
            seen["count"] += 1
            if seen["count"] == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


@push_app.command("run")
def push_run(
    now: Annotated[str | None, typer.Option("--now", help="The run's instant TS (ISO 8601; "
                                            "default the clock).")] = None,
    outbox: Annotated[Path | None, typer.Option("--outbox", help="Outbox directory (default "
                                                "<store>/outbox).")] = None,
    json_out: JsonOpt = False,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Deliver every subscription due at TS: one file + manifest each under the outbox.

    Example: juki push run --now 2025-06-02T06:00:00 --outbox /srv/juki/outbox
    """
    from engine.cli import _progress
    from engine.dates import parse_timestamp
    from loaders.push import PushRefused, run_push

    at = parse_timestamp(now, option="--now") if now is not None else _now()
    try:
        with _progress("push") as bar:
            summary = run_push(_store(store), at=at, outbox=outbox, progress=bar,
                               checkpoint=_crash_hook())  # fmt: skip
    except PushRefused as e:
        if json_out:
            _json(e.summary.to_json())
        raise
    if json_out:
        _json(summary.to_json())
    rows = sum(d.rows for d in summary.delivered)
    completed = sum(d.completed for d in summary.delivered)
    _line(f"push run {summary.run_id}: {len(summary.delivered)} run(s) delivered "
          f"({rows:,} rows, up to journal batch {summary.upto})"
          + (f", {completed} completed after an interruption" if completed else "")
          + f" in {summary.seconds:.1f} s → {outbox or Path(store) / 'outbox'}")  # fmt: skip
    return 0


def _provided(command: str, summary: Any) -> int:
    _line(f"{command}: {summary.rows:,} rows ({summary.recorded:,} provision records) from "
          f"{len(summary.runs)} run(s) in {summary.seconds:.1f} s → {summary.path} "
          f"(request {summary.request_id})")  # fmt: skip
    return 0


@push_app.command("redeliver")
def push_redeliver(
    subscription: SubscriptionOpt,
    run: Annotated[str, typer.Option("--run", help="The run id YYYYMMDDTHHMMSS.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Where to write it (default "
                                                  "<run id>.parquet here).")] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Write a delivered run again, byte-identical, recorded as provided again.

    Example: juki push redeliver --subscription JPS-pension-change-1 --run 20250602T060000 --out again.parquet
    """
    from loaders.push import redeliver

    summary = redeliver(_store(store), subscription, run, out=out_file, now=_now())
    return _provided("push redeliver", summary)


@push_app.command("pull")
def push_pull(
    subscription: SubscriptionOpt,
    since: Annotated[str, typer.Option("--since", help="Runs delivered after this instant.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output file (manifest beside it).")],
    file_format: Annotated[FileFormat, typer.Option("--format", help="Output format.")]
    = FileFormat.parquet,
    encoding: Annotated[EncodingChoice, typer.Option("--encoding", help="CSV encoding.")]
    = EncodingChoice.utf8,
    store: StoreOpt = DEFAULT_STORE,
) -> int:
    """Catch up: the rows of every run delivered after --since, as one file with its manifest.

    Example: juki push pull --subscription JPS-pension-change-1 --since 2025-06-01 --out missed.parquet
    """
    from engine.dates import parse_timestamp
    from loaders.outputs import OutputOptions
    from loaders.push import pull

    options = OutputOptions(out_file, file_format.value, encoding.value)  # type: ignore[arg-type]
    summary = pull(_store(store), subscription, since=parse_timestamp(since, option="--since"),
                   output=options, now=_now())  # fmt: skip
    return _provided("push pull", summary)
