"""The agency services as batch jobs call them (SPEC §5): read the request, run the engine's
service under a grant, record and write through `provide`. The CLI is a thin layer over these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.access import Grant
from engine.dates import iso_jst
from engine.errors import UsageError
from engine.extract import Part, Region
from engine.store import Store
from loaders.outputs import OutputOptions
from loaders.provide import ProvideSummary, Provision, provide
from loaders.requests import read_request, request_kind


@dataclass(frozen=True)
class Requester:
    """Who asks and how the answer is written (the options every provision command shares)."""

    agency: str
    affair: str
    output: OutputOptions
    columns: list[str] | None = None
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    progress: Callable[[int, int], None] | None = None


def _bound(store: Store, known_at: dt.datetime | None) -> int | None:
    from engine.resolve import known_batch

    return known_batch(store, known_at)


def _common(who: Requester, known_at: dt.datetime | None) -> dict[str, Any]:
    return {"columns": who.columns, "known_at": iso_jst(known_at) if known_at else None}


def _require_file(path: str | Path) -> None:
    if not Path(path).is_file():
        raise UsageError.missing_file(path)


def run_lookup(
    store: Store,
    path: str | Path,
    who: Requester,
    *,
    as_of: dt.date,
    known_at: dt.datetime | None = None,
) -> ProvideSummary:
    """`juki lookup FILE`: one row per request row, in order (SPEC §5)."""
    from engine.lookup import lookup_parts

    _require_file(path)
    parameters = {**_common(who, known_at), "file": str(path), "as_of": as_of.isoformat()}

    def compute(grant: Grant) -> Provision:
        request = read_request(path)
        upto = _bound(store, known_at)
        parts, count = lookup_parts(store, request.codes, request.kind, grant, date=as_of,
                                    upto_batch=upto)  # fmt: skip
        return Provision.streamed(parts, count, scattered=True)

    return provide(store, agency=who.agency, affair=who.affair, function="lookup",
                   columns=who.columns, parameters=parameters, output=who.output, now=who.now,
                   compute=compute, progress=who.progress)  # fmt: skip


def default_until(store: Store, now: dt.datetime) -> dt.datetime:
    """SPEC §5: until defaults to now, or to the last recorded_at if that is later."""
    last = store.journal_head().recorded_at
    return max(now, last) if last is not None else now


def run_changes(
    store: Store,
    path: str | Path,
    who: Requester,
    *,
    since: dt.datetime,
    until: dt.datetime | None = None,
) -> ProvideSummary:
    """`juki changes FILE --since TS [--until TS]`: the periodic change check (SPEC §5)."""
    from engine.changes import changes, prepared_window

    _require_file(path)
    store.require()
    until = until if until is not None else default_until(store, who.now)
    if since >= until:
        raise UsageError(f"--since {iso_jst(since)}: not before --until {iso_jst(until)}")
    parameters = {"columns": who.columns, "file": str(path), "since": iso_jst(since),
                  "until": iso_jst(until)}  # fmt: skip

    def compute(grant: Grant) -> Provision:
        # the window and its codes (~3 s at national size) are read while the targets are parsed
        kind = request_kind(path)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="juki-window") as pool:
            early = pool.submit(prepared_window, store, since=since, until=until, kind=kind)
            targets = read_request(path)
            window = early.result()
        table, provided = changes(store, targets.codes, targets.kind, grant, since=since,
                                  until=until, window=window)  # fmt: skip
        return Provision(table, provided)

    return provide(store, agency=who.agency, affair=who.affair, function="changes",
                   columns=who.columns, parameters=parameters, output=who.output, now=who.now,
                   compute=compute, progress=who.progress)  # fmt: skip


def _extract(
    store: Store,
    who: Requester,
    parameters: dict[str, Any],
    region: Region,
    known_at: dt.datetime | None,
    query: Callable[[Grant, int | None], Iterator[Part]],
) -> ProvideSummary:
    """One extract (function `extract`): region checked first, then `provide`, streamed by
    slices of persons."""
    from engine import extract
    from engine.history import person_slices

    region.check()
    parameters = {**_common(who, known_at), **parameters, "region": region.to_json()}

    def compute(grant: Grant) -> Provision:
        count = len(person_slices(store, extract.SLICE_PERSONS))
        return Provision.streamed(query(grant, _bound(store, known_at)), count)

    return provide(store, agency=who.agency, affair=who.affair, function="extract",
                   columns=who.columns, parameters=parameters, output=who.output, now=who.now,
                   compute=compute, progress=who.progress)  # fmt: skip


def run_base_date(
    store: Store, who: Requester, *, date: dt.date, known_at: dt.datetime | None = None,
    region: Region | None = None,
) -> ProvideSummary:  # fmt: skip
    """`juki extract base-date --date D`: everyone registered on D (SPEC §5)."""
    from engine.extract import base_date_parts

    region = region or Region()
    return _extract(store, who, {"extract": "base-date", "date": date.isoformat()}, region,
                    known_at, lambda grant, upto: base_date_parts(store, grant, date=date,
                                                            upto_batch=upto, region=region))  # fmt: skip


def run_region_age(
    store: Store, who: Requester, *, date: dt.date, min_age: int, max_age: int,
    known_at: dt.datetime | None = None, region: Region | None = None,
) -> ProvideSummary:  # fmt: skip
    """`juki extract region-age --date D --min-age A --max-age B` (SPEC §5)."""
    from engine.extract import check_band, region_age_parts

    check_band(min_age, max_age)
    region = region or Region()
    parameters = {"extract": "region-age", "date": date.isoformat(), "min_age": min_age,
                  "max_age": max_age}  # fmt: skip
    return _extract(store, who, parameters, region, known_at,
                    lambda grant, upto: region_age_parts(store, grant, date=date, min_age=min_age,
                                                   max_age=max_age, upto_batch=upto,
                                                   region=region))  # fmt: skip


def run_milestone(
    store: Store, who: Requester, *, month: str, ages: list[int],
    known_at: dt.datetime | None = None, region: Region | None = None,
) -> ProvideSummary:  # fmt: skip
    """`juki extract milestone --month YYYY-MM --ages 20,34` (SPEC §5, Age)."""
    from engine.dates import parse_month
    from engine.extract import milestone_parts

    first, last = parse_month(month)
    region = region or Region()
    parameters = {"extract": "milestone", "month": month, "ages": ages}
    return _extract(store, who, parameters, region, known_at,
                    lambda grant, upto: milestone_parts(store, grant, first=first, last=last,
                                                  ages=ages, upto_batch=upto, region=region))  # fmt: skip


def run_stats(
    store: Store,
    who: Requester,
    *,
    date: dt.date,
    by: list[str],
    known_at: dt.datetime | None = None,
    plot: Path | None = None,
    to_file: bool = True,
) -> ProvideSummary:
    """`juki stats --date D --by ...` (SPEC §5): counts per group; no provision is recorded."""
    from engine.stats import counts

    parameters = {"known_at": iso_jst(known_at) if known_at else None, "date": date.isoformat(),
                  "by": by, "plot": str(plot) if plot else None}  # fmt: skip

    def compute(grant: Grant) -> Provision:
        upto = _bound(store, known_at)
        table = counts(store, grant, date=date, by=by, upto_batch=upto)
        if plot is not None:
            from loaders.plots import write_pyramid

            pyramid = table if by == ["age5", "sex"] else counts(
                store, grant, date=date, by=["age5", "sex"], upto_batch=upto)  # fmt: skip
            scope = f", prefecture {grant.prefecture}" if grant.prefecture else ""
            write_pyramid(plot, pyramid,
                          title=f"Population pyramid: registered on {date.isoformat()}{scope}")
        return Provision(table, None)

    return provide(store, agency=who.agency, affair=who.affair, function="stats", columns=None,
                   parameters=parameters, output=who.output if to_file else None, now=who.now,
                   compute=compute, progress=who.progress)  # fmt: skip
