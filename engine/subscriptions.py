"""Push subscriptions (SPEC §5a): who is told about changes of which targets, and how often.

Two Delta tables. `subscriptions` is an append-only log of events (`added`, `targets`,
`removed`); a subscription's state is its events folded in order, so a name once used stays
taken for ever. `targets` holds each subscription's targets as parsed int64 codes with their
kind and 1-based `request_row`, partitioned by subscription: replacing one subscription's
targets rewrites only its partition, and a push run streams one partition (a national target
set of 100 M rows is never a Python object). Malformed codes are dropped (they can never match);
unknown ones are kept (a code may be issued later).

Writers hold the store's push lock (`.push.lock`): one subscription change or push run at a time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from engine.errors import UsageError
from engine.schema import CODE_KIND
from engine.store import Store

if TYPE_CHECKING:
    import polars as pl

    from engine.resolve import CodeColumn

Interval = Literal["daily", "weekly", "monthly"]
INTERVALS: tuple[str, ...] = ("daily", "weekly", "monthly")
PUSH_LOCK = ".push.lock"
# A name is a directory of the outbox: no separators, no leading dot.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
UTC_US = pa.timestamp("us", tz="UTC")

SUBSCRIPTIONS_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64()),  # event number 1, 2, … (order of the log)
        pa.field("name", pa.string()),
        pa.field("event", pa.string()),  # added | targets | removed
        pa.field("at", UTC_US),
        pa.field("agency", pa.string()),
        pa.field("affair", pa.string()),
        pa.field("interval", pa.string()),
        pa.field("kind", pa.string()),  # my_number | resident_code (added, targets)
        pa.field("watermark", pa.int64()),  # added: the last journal batch applied then
        pa.field("targets", pa.int64()),  # rows of the target file
        pa.field("malformed", pa.int64()),  # of them, malformed codes (dropped)
        pa.field("source", pa.string()),  # the target file as given
        pa.field("source_sha256", pa.string()),
    ]
)
TARGETS_SCHEMA = pa.schema(
    [
        pa.field("subscription", pa.string()),
        pa.field("kind", pa.int8()),  # engine.schema.CODE_KIND
        pa.field("request_row", pa.int64()),
        pa.field("code", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Subscription:
    """A subscription's state: its events folded in order."""

    name: str
    agency: str
    affair: str
    interval: str
    kind: str
    watermark: int  # journal batch applied when it was added
    targets: int
    malformed: int
    added_at: dt.datetime
    removed_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        return self.removed_at is None

    def to_json(self) -> dict[str, Any]:
        from engine.dates import iso_jst

        out = asdict(self)
        out["added_at"] = iso_jst(self.added_at)
        out["removed_at"] = iso_jst(self.removed_at) if self.removed_at else None
        return out


@dataclass(frozen=True)
class Targets:
    """Parsed targets: `request_row` and int64 `code` (null when malformed)."""

    kind: CodeColumn
    codes: pl.DataFrame
    source: str
    sha256: str

    @property
    def malformed(self) -> int:
        return int(self.codes["code"].null_count())


def check_name(name: str, option: str = "--name") -> str:
    if not NAME.fullmatch(name):
        raise UsageError(f"{option} '{name}': letters, digits, '.', '_' and '-' only, "
                         "not starting with '.', '_' or '-'")  # fmt: skip
    return name


def parse_targets(kind: CodeColumn, codes: pl.DataFrame, *, source: str, sha256: str) -> Targets:
    """Targets from a request file's codes (`request_row`, `code` text): int64, null if malformed."""
    import polars as pl

    from engine.resolve import parse_codes

    parsed = codes.select("request_row", code=parse_codes(pl.col("code"), kind))
    return Targets(kind, parsed, source, sha256)


# -- reading ------------------------------------------------------------------------------------
def _events(store: Store) -> list[dict[str, Any]]:
    root = store.table_path("subscriptions")
    if not (root / "_delta_log").is_dir():
        return []
    from deltalake import DeltaTable

    rows = DeltaTable(str(root)).to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: r["seq"])


def read_subscriptions(store: Store) -> dict[str, Subscription]:
    """Every subscription ever added (removed ones too), by name, in the order added."""
    subs: dict[str, Subscription] = {}
    for e in _events(store):
        name = e["name"]
        if e["event"] == "added":
            subs[name] = Subscription(
                name=name, agency=e["agency"], affair=e["affair"], interval=e["interval"],
                kind=e["kind"], watermark=int(e["watermark"]), targets=int(e["targets"]),
                malformed=int(e["malformed"]), added_at=e["at"],
            )  # fmt: skip
        elif name in subs and e["event"] == "targets":
            old = subs[name]
            subs[name] = Subscription(**{**asdict(old), "kind": e["kind"],
                                         "targets": int(e["targets"]),
                                         "malformed": int(e["malformed"])})  # fmt: skip
        elif name in subs and e["event"] == "removed":
            subs[name] = Subscription(**{**asdict(subs[name]), "removed_at": e["at"]})
    return subs


def get_subscription(store: Store, name: str, *, option: str = "--subscription") -> Subscription:
    subs = read_subscriptions(store)
    if name not in subs:
        raise UsageError(f"{option} '{name}': no such subscription")
    return subs[name]


def scan_targets(store: Store, sub: Subscription) -> pl.LazyFrame:
    """The subscription's targets (`request_row`, int64 `code`), streamed from its partition."""
    import polars as pl

    return (
        pl.scan_delta(str(store.table_path("targets")))
        .filter(pl.col("subscription") == sub.name)
        .filter(pl.col("kind") == CODE_KIND[sub.kind])
        .select("request_row", "code")
    )


# -- writing (under the push lock) ----------------------------------------------------------------
def _event(store: Store, **fields: Any) -> None:
    from engine.appends import append

    row = {f.name: fields.get(f.name) for f in SUBSCRIPTIONS_SCHEMA}
    row["seq"] = len(_events(store)) + 1
    append(store.table_path("subscriptions"),
           pa.Table.from_pylist([row], schema=SUBSCRIPTIONS_SCHEMA))  # fmt: skip


def _write_targets(store: Store, name: str, targets: Targets) -> None:
    """Replace the subscription's partition (also on add: a crash after the targets but before
    the `added` event leaves rows a retry must not add to)."""
    import polars as pl
    from deltalake import write_deltalake

    from engine.appends import ensure_table

    root = store.table_path("targets")
    ensure_table(root, TARGETS_SCHEMA, ["subscription"])
    frame = targets.codes.filter(pl.col("code").is_not_null()).select(
        subscription=pl.lit(name), kind=pl.lit(CODE_KIND[targets.kind], pl.Int8),
        request_row=pl.col("request_row").cast(pl.Int64), code=pl.col("code"),
    )  # fmt: skip
    table = frame.to_arrow().cast(TARGETS_SCHEMA)
    write_deltalake(str(root), table, mode="overwrite", partition_by=["subscription"],
                    predicate=f"subscription = '{name}'")  # fmt: skip


def default_name(subs: dict[str, Subscription], agency: str, affair: str) -> str:
    """`<agency>-<affair>-<n>`, n counting the agency's subscriptions for the affair from 1
    (removed ones included: a name is never reused)."""
    n = sum(1 for s in subs.values() if s.agency == agency and s.affair == affair) + 1
    while f"{agency}-{affair}-{n}" in subs:
        n += 1
    return f"{agency}-{affair}-{n}"


def add_subscription(
    store: Store,
    targets: Targets,
    *,
    agency: str,
    affair: str,
    interval: str,
    name: str | None,
    now: dt.datetime,
) -> Subscription:
    """Register a subscription (the affair must allow `push`: else refused and recorded, exit 3).

    Its watermark is the last journal batch applied now: changes already applied are not pushed.
    """
    from engine.access import authorize

    if interval not in INTERVALS:
        raise UsageError(f"--interval '{interval}': one of {', '.join(INTERVALS)}")
    if name is not None:
        check_name(name)
    store.require()
    with store.writer(f"juki subscribe add {name or ''}".strip(), lock=PUSH_LOCK):
        authorize(store, agency=agency, affair=affair, function="push", columns=None,
                  parameters={"subscribe": "add", "name": name, "interval": interval,
                              "targets": targets.source}, now=now)  # fmt: skip
        subs = read_subscriptions(store)
        if name is None:
            name = check_name(default_name(subs, agency, affair),
                              "--agency/--affair (default name)")  # fmt: skip
        elif name in subs:
            raise UsageError(f"--name '{name}': already used by a subscription (names are never "
                             "reused)")  # fmt: skip
        watermark = store.journal_head().batch
        _write_targets(store, name, targets)
        _event(store, name=name, event="added", at=now, agency=agency, affair=affair,
               interval=interval, kind=targets.kind, watermark=watermark,
               targets=targets.codes.height, malformed=targets.malformed,
               source=targets.source, source_sha256=targets.sha256)  # fmt: skip
    return read_subscriptions(store)[name]


def replace_targets(store: Store, name: str, targets: Targets, *, now: dt.datetime) -> Subscription:
    """Replace an active subscription's targets (its watermark stays)."""
    from engine.access import authorize

    store.require()
    with store.writer(f"juki subscribe targets {name}", lock=PUSH_LOCK):
        sub = _active(store, name)
        authorize(store, agency=sub.agency, affair=sub.affair, function="push", columns=None,
                  parameters={"subscribe": "targets", "name": name, "targets": targets.source},
                  now=now)  # fmt: skip
        _write_targets(store, name, targets)
        _event(store, name=name, event="targets", at=now, agency=sub.agency, affair=sub.affair,
               interval=sub.interval, kind=targets.kind, targets=targets.codes.height,
               malformed=targets.malformed, source=targets.source,
               source_sha256=targets.sha256)  # fmt: skip
    return read_subscriptions(store)[name]


def remove_subscription(store: Store, name: str, *, now: dt.datetime) -> Subscription:
    """End a subscription: no more runs, its targets deleted; its name stays taken and its
    delivered runs can still be redelivered or pulled."""
    from deltalake import DeltaTable

    store.require()
    with store.writer(f"juki subscribe remove {name}", lock=PUSH_LOCK):
        sub = _active(store, name)
        _event(store, name=name, event="removed", at=now, agency=sub.agency, affair=sub.affair,
               interval=sub.interval)  # fmt: skip
        root = store.table_path("targets")
        if (root / "_delta_log").is_dir():
            DeltaTable(str(root)).delete(f"subscription = '{name}'")
    return read_subscriptions(store)[name]


def _active(store: Store, name: str) -> Subscription:
    sub = get_subscription(store, name)
    if not sub.active:
        raise UsageError(f"--subscription '{name}': removed")
    return sub
