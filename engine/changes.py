"""The periodic change check (定期照会, SPEC §5 `juki changes`), shared with push (SPEC §5a).

For each target with notifications recorded in the window (since < recorded_at ≤ until): the
reasons in application order (cancelled notifications and the X1 itself included), the first
and last change dates, the record as known at `until` and the previous name and address as known
at `since`.

A window is a range of journal batches (after < batch ≤ upto): `recorded_at` is stamped once per
batch and strictly increases, so the batches recorded in (since, until] are exactly such a range,
and a held row released late is in the batch that released it. `juki changes` turns its instants
into batches; a push run keeps its watermark as a batch.

Fast path (DESIGN W1): the window's notifications are few (≈ 1.7 M a month) and the targets
many (≈ 100 M). Collect every code the window's persons ever held, parse the targets to int64
and semi-join them against that small set; only the hits get records, previous values and
provision records. The targets are never resolved in full nor joined with `current`. A push run
shares one window, one code set and one history read among all its subscriptions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from engine.access import Grant, in_scope, provided_columns, withhold
from engine.current import Generation, generations
from engine.dates import japan_date
from engine.history import RULE_KEYS, cancellations, chosen_rows, scan_history
from engine.resolve import CodeColumn, batch_stamp, codes_of_persons, known_batch, parse_code_series
from engine.schema import RECORD_COLUMNS
from engine.store import Store

PREVIOUS = ("surname", "given_name", "address", "municipality_code")
OWN_COLUMNS = ["reasons", "first_change_date", "last_change_date"]


@dataclass
class Window:
    """The notifications applied in batches after < batch ≤ upto, in application order.

    `since_date`/`until_date` are the Japan-time dates of the window's bounds (the dates the
    previous and current versions are read on); codes match as known at `codes_upto` (None: now).
    """

    after: int
    upto: int
    since_date: dt.date
    until_date: dt.date
    rows: pl.DataFrame
    codes_upto: int | None = None
    _codes: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False)
    _summary: pl.DataFrame | None = field(default=None, repr=False)

    def persons(self) -> pl.Series:
        return self.rows["person"].unique()

    def codes(self, store: Store, kind: CodeColumn) -> pl.DataFrame:
        """(code, person) of every code of the kind the window's persons ever held (cached)."""
        if kind not in self._codes:
            if self.rows.is_empty():
                self._codes[kind] = pl.DataFrame(schema={"code": pl.Int64, "person": pl.Int64})
            else:
                self._codes[kind] = codes_of_persons(
                    store, self.persons(), kind, upto_batch=self.codes_upto
                ).unique("code")
        return self._codes[kind]

    def narrow(self, store: Store, *, after: int) -> Window:
        """The later window after < batch ≤ self.upto, reusing this window's rows and codes."""
        since = batch_stamp(store, after)
        rows = self.rows.filter(pl.col("batch") > after)
        keep = rows["person"].unique().implode()
        return Window(
            after=max(after, self.after), upto=max(self.upto, after),
            since_date=japan_date(since) if since is not None else dt.date(1, 1, 1),
            until_date=self.until_date, rows=rows, codes_upto=self.codes_upto,
            _codes={k: c.filter(pl.col("person").is_in(keep)) for k, c in self._codes.items()},
        )  # fmt: skip

    def summary(self) -> pl.DataFrame:
        """Per person of the window: reasons, first and last change dates, last resident code."""
        if self._summary is None:
            self._summary = self.rows.group_by("person", maintain_order=True).agg(
                reasons=pl.col("reason"),
                first_change_date=pl.col("change_date").min(),
                last_change_date=pl.col("change_date").max(),
                _last_code=pl.col("resident_code").last(),
            )
        return self._summary


def window_rows(store: Store, *, after: int, upto: int) -> pl.DataFrame:
    """Every notification applied in batches after < batch ≤ upto, in application order."""
    return (
        scan_history(store)
        .filter((pl.col("batch") > after) & (pl.col("batch") <= upto))
        .select("person", "batch", "apply_order", "reason", "change_date", "resident_code")
        .sort("batch", "apply_order")
        .collect()
    )


def window_of_batches(
    store: Store, *, after: int, upto: int, codes_upto: int | None = None
) -> Window:
    """The window after < batch ≤ upto (empty when upto ≤ after), dated by its batches' stamps."""
    since, until = batch_stamp(store, after), batch_stamp(store, upto)
    never = dt.date(1, 1, 1)
    return Window(
        after=after, upto=max(upto, after),
        since_date=japan_date(since) if since is not None else never,
        until_date=japan_date(until) if until is not None else never,
        rows=window_rows(store, after=after, upto=upto), codes_upto=codes_upto,
    )  # fmt: skip


def window_between(store: Store, *, since: dt.datetime, until: dt.datetime) -> Window:
    """The window since < recorded_at ≤ until of `juki changes` (codes matched as known now)."""
    after, upto = known_batch(store, since) or 0, known_batch(store, until) or 0
    return Window(after=after, upto=max(upto, after), since_date=japan_date(since),
                  until_date=japan_date(until), rows=window_rows(store, after=after, upto=upto))  # fmt: skip


def match_codes(targets: pl.LazyFrame, codes: pl.DataFrame) -> pl.DataFrame:
    """(request_row, person) of the targets (`request_row`, int64 `code`) naming one of `codes`
    (`code`, `person`), in request order. The targets stream through a semi-join against the
    small code set (DESIGN W1); only the hits are joined and sorted."""
    if codes.is_empty():
        return pl.DataFrame(schema={"request_row": pl.Int64, "person": pl.Int64})
    hit = (
        targets.select("request_row", "code")
        .filter(pl.col("code").is_in(codes["code"].implode()))
        .collect(engine="streaming")
    )
    return (
        hit.join(codes, on="code", how="inner")
        .sort("request_row", maintain_order=True)
        .select(pl.col("request_row").cast(pl.Int64), pl.col("person").cast(pl.Int64))
    )


def hits(store: Store, window: Window, targets: pl.DataFrame, kind: CodeColumn) -> pl.DataFrame:
    """(request_row, person) of the targets (`request_row`, `code` text) naming a window person."""
    # parsed eagerly: the kernel then runs once over all chunks, not once per streamed morsel
    parsed = targets.select("request_row").with_columns(
        code=parse_code_series(targets["code"], kind))  # fmt: skip
    return match_codes(parsed.lazy(), window.codes(store, kind))


@dataclass(frozen=True)
class History:
    """Key columns (`RULE_KEYS`, `version`) of some persons' histories, and record columns
    already read for some of their rows (`rows`: person, version, columns), or None; `base`:
    the compacted base whose rows stand for the histories up to its batch (None: none did)."""

    keys: pl.DataFrame
    rows: pl.DataFrame | None = None
    base: Generation | None = None


def read_history(
    store: Store, persons: pl.Series, *, upto: int, floor: int | None = None,
    earliest: dt.date | None = None, columns: list[str] | None = None,
) -> History:  # fmt: skip
    """The key columns of these persons' whole histories up to batch `upto`; record columns are
    fetched only for the rows a read chooses (`fetch_rows`): decoding the text columns of every
    history row of ~1 M persons cost 4x the keys.

    When a compacted base reflects a batch B0 ≤ `floor` (the lowest bound the history will be
    read at), no journal row before B0 is read (a 126 M-row scan): a person's rows up to B0
    count as their base row alone (placed at B0, before every later row), which the as-of rule
    chooses exactly when the full history would choose a row up to B0 — unless the base row is
    dated after `earliest` (the earliest date it will be read for) or cancelled by a later `X1`;
    those persons' whole histories are read from the journal. The base is the newest such one:
    a store compacted since the window began starts from an older base kept on disk (Delta
    time travel), and reads the journal rows since it. `columns` of every base row of the
    persons are kept (`History.rows`) for `fetch_rows`.
    """
    empty = scan_history(store).select(*RULE_KEYS, "version").clear().collect()
    if persons.is_empty():  # (an empty is_in would still read every row)
        return History(empty)
    generation = None
    if floor is not None and earliest is not None:
        bound = min(floor, upto)
        generation = next((g for g in generations(store) if g.batch <= bound), None)
    if generation is None or generation.batch == 0:
        return History(_journal_keys(store, persons, upto=upto))
    base_batch = generation.batch
    wanted = list(dict.fromkeys(["person", "version", "reason", "change_date",
                                 "municipality_code", "seq", *(columns or [])]))  # fmt: skip
    base = (generation.scan().filter(pl.col("person").is_in(persons.implode())).select(wanted)
            .collect().filter(pl.col("version").is_not_null()))  # fmt: skip
    recent = (scan_history(store, upto_batch=upto)
              .filter((pl.col("batch") > base_batch) & pl.col("person").is_in(persons.implode()))
              .select(*RULE_KEYS, "version").collect())  # fmt: skip
    cancelled = cancellations(recent.lazy()).collect()
    hard = pl.concat([
        base.filter(pl.col("change_date") > earliest).select("person"),
        base.join(cancelled, on=["municipality_code", "seq"], how="semi").select("person"),
    ])["person"].unique()  # fmt: skip
    rows = base.select(list(dict.fromkeys(["person", "version", *(columns or [])])))
    base = base.filter(~pl.col("person").is_in(hard.implode()))
    as_keys = base.select(
        "person", batch=pl.lit(base_batch, pl.Int64), apply_order=pl.lit(-1, pl.Int32),
        reason="reason", change_date="change_date", municipality_code="municipality_code",
        seq="seq", cancels_municipality_code=pl.lit(None, pl.String),
        cancels_seq=pl.lit(None, pl.Int64), version="version",
    )  # fmt: skip
    parts = [as_keys, recent.filter(~pl.col("person").is_in(hard.implode()))]
    if not hard.is_empty():
        parts.append(_journal_keys(store, hard, upto=upto))
    keys = pl.concat([p.select(empty.columns) for p in parts], how="vertical_relaxed")
    return History(keys, rows, generation)


def _journal_keys(store: Store, persons: pl.Series, *, upto: int) -> pl.DataFrame:
    return (
        scan_history(store, upto_batch=upto)
        .filter(pl.col("person").is_in(persons.implode()))
        .select(*RULE_KEYS, "version")
        .collect()
    )


def chosen_at(history: History, *, upto: int, date: dt.date) -> pl.DataFrame:
    """(person, batch, apply_order, version) of each person's version in effect on `date` as known at
    batch `upto`."""
    return (chosen_rows(history.keys.lazy().filter(pl.col("batch") <= upto), date)
            .select("person", "batch", "apply_order", "version").collect())  # fmt: skip


def fetch_rows(
    store: Store, wants: list[tuple[pl.DataFrame, list[str]]], *, read: pl.DataFrame | None = None,
    base: Generation | None = None,
) -> list[pl.DataFrame]:  # fmt: skip
    """Per (rows, columns) asked: `person` and `columns` of the history rows named by
    (person, batch, version) in `rows`.

    Sources, in order (a person's versions are numbered once, so (person, version) names one
    row wherever it is kept): `read`, every base row of the persons asked for, read already
    (person, version, some columns), for the asks it has the columns of; the current delta
    (the versions written since the base, small); the compacted base for rows up to its batch
    (half the journal's size) — `base`, the older base a history started from (its rows stand
    at its batch), instead of the newest when given; the journal files of the remaining rows'
    batches. Each source is read once for all the asks, with only the columns of the asks that
    need it.
    """
    found: list[list[pl.DataFrame]] = [[] for _ in wants]
    left = [rows.select("person", "batch", "version") for rows, _ in wants]

    def take(source: pl.LazyFrame, asks: list[pl.DataFrame]) -> None:
        needed = [i for i, rows in enumerate(asks) if not rows.is_empty()]
        if not needed:
            return
        columns = list(dict.fromkeys(c for i in needed for c in wants[i][1]))
        keys = pl.concat([asks[i].select("person", "version") for i in needed]).unique()
        got = (source.filter(pl.col("person").is_in(keys["person"].unique().implode()))
               .select("person", "version", *[c for c in columns if c != "person"])
               .collect().join(keys, on=["person", "version"], how="semi")
               .unique(["person", "version"], keep="first"))  # fmt: skip
        for i in needed:
            part = got.join(asks[i].select("person", "version"), on=["person", "version"],
                            how="semi")  # fmt: skip
            found[i].append(part.select(list(dict.fromkeys(["person", *wants[i][1]]))))
            left[i] = left[i].join(part.select("person", "version"), on=["person", "version"],
                                   how="anti")  # fmt: skip

    covered = [read is not None and set(cols) <= set(read.columns) for _, cols in wants]
    if read is not None:  # every base row of the persons, with some columns
        take(read.lazy(), [rows if ok else rows.clear() for rows, ok in zip(left, covered, strict=True)])
    # every version written to `current` since the base (the versions since, and those an X1
    # restored): small, and it holds the record of almost every version a change check shows
    take(pl.scan_delta(str(store.table_path("current_delta"))), left)
    # An older base stands for the rows up to its batch; the rows since (in (base, newest]) are
    # then read from their journal files (a month's), not by decoding the newest base's 125 M
    # rows for ~1 M persons (W1 on a store compacted after the window began: 18.7 → 14.3 s).
    newest = next(generations(store))
    bases = [newest] if base is None or base.version == newest.version else [base]
    for source in bases:
        take(source.scan(), [rows.clear() if ok else rows.filter(pl.col("batch") <= source.batch)
                             for rows, ok in zip(left, covered, strict=True)])  # fmt: skip
    batches = pl.concat([rows["batch"] for rows in left]).unique()
    if len(batches):
        take(scan_history(store).filter(pl.col("batch").is_between(batches.min(), batches.max())
                                        & pl.col("batch").is_in(batches.implode())), left)  # fmt: skip
    return [pl.concat(parts, how="vertical_relaxed") if parts else
            scan_history(store).select(list(dict.fromkeys(["person", *columns]))).clear().collect()
            for parts, (_, columns) in zip(found, wants, strict=True)]  # fmt: skip


def record_columns(*grants: Grant) -> list[str]:
    """The record columns a change check under these grants shows or needs (scope, protected
    persons, the provision record's resident code): each is decoded for ~1 M base rows."""
    needed = {"resident_code", "prefecture_code", "protected"}
    for grant in grants:
        needed |= set(grant.output_columns)
    return [c for c in RECORD_COLUMNS if c in needed]


def versions_at(
    store: Store, history: History, *, upto: int, until: dt.date, befores: dict[int, dt.date],
    columns: list[str] = RECORD_COLUMNS,
) -> tuple[pl.DataFrame, dict[int, pl.DataFrame]]:  # fmt: skip
    """The record as known at `upto` on `until` (`person`, `columns` of the record), and per
    window start `after` the previous values as known at `after` on its date (`person`,
    previous_*)."""
    now = chosen_at(history, upto=upto, date=until)
    afters = list(befores)
    wants = [(now, columns),
             *[(chosen_at(history, upto=a, date=befores[a]), list(PREVIOUS)) for a in afters]]  # fmt: skip
    record, *previous = fetch_rows(store, wants, read=history.rows, base=history.base)
    renamed = [pl.col(c).alias(f"previous_{c}") for c in PREVIOUS]
    return record, {a: rows.select("person", *renamed) for a, rows in zip(afters, previous, strict=True)}


def previous_names(grant: Grant) -> list[str]:
    """previous_* columns appear only where the column they precede is in the output."""
    return [f"previous_{c}" for c in PREVIOUS if c in grant.columns]


def output_columns(grant: Grant) -> list[str]:
    return ["request_row", *grant.output_columns, *OWN_COLUMNS, *previous_names(grant)]


def empty_output(grant: Grant) -> pl.DataFrame:
    """Zero rows with the columns and types a change check gives under the grant."""
    import pyarrow as pa

    from engine.schema import RECORD_FIELDS

    record = pl.DataFrame(pa.schema(RECORD_FIELDS).empty_table())
    return record.select(
        pl.lit(None, pl.Int64).alias("request_row"), *grant.output_columns,
        reasons=pl.lit(None, pl.List(pl.String)), first_change_date=pl.lit(None, pl.Date),
        last_change_date=pl.lit(None, pl.Date),
        **{f"previous_{c}": pl.lit(None, pl.String) for c in PREVIOUS},
    ).clear().select(output_columns(grant))  # fmt: skip


def assemble(
    found: pl.DataFrame,
    summary: pl.DataFrame,
    now: pl.DataFrame,
    before: pl.DataFrame,
    grant: Grant,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(output rows, provided records) of the hits under the grant (scope, protected persons)."""
    rows = (
        found.lazy()
        .join(summary.lazy(), on="person", how="left", maintain_order="left")
        .join(now.lazy().with_columns(_has_version=pl.lit(True)), on="person", how="left",
              maintain_order="left")
        .join(before.lazy(), on="person", how="left", maintain_order="left")
        .filter(in_scope(grant) if grant.prefecture is not None else pl.lit(True))
        .with_columns(protected=pl.when(pl.col("_has_version"))
                      .then(pl.col("protected").fill_null(False)))
    )  # fmt: skip
    rows = withhold(rows, grant, extra=("previous_address", "previous_municipality_code"))
    result = rows.sort("request_row", maintain_order=True).collect(engine="in-memory")
    provided = result.select(
        resident_code=pl.coalesce("resident_code", "_last_code"),
        columns=provided_columns(grant),
    )
    return result.select(output_columns(grant)), provided


def changes_in(
    store: Store, window: Window, found: pl.DataFrame, grant: Grant
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(output rows, provided records) of hits found in one window."""
    # Every hit person has notifications in the window: the as-of rule over their histories
    # (keys only) gives both versions, whose record columns are then fetched.
    columns = record_columns(grant)
    history = read_history(store, found["person"].unique(), upto=window.upto, floor=window.after,
                           earliest=min(window.since_date, window.until_date),
                           columns=list(PREVIOUS))  # fmt: skip
    now, before = versions_at(store, history, upto=window.upto, until=window.until_date,
                              befores={window.after: window.since_date}, columns=columns)  # fmt: skip
    return assemble(found, window.summary(), now, before[window.after], grant)


def changes(
    store: Store,
    targets: pl.DataFrame,
    kind: CodeColumn,
    grant: Grant,
    *,
    since: dt.datetime,
    until: dt.datetime,
    window: Window | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(output rows, provided records) for the targets (`request_row`, `code` text).

    Codes are matched as known now (changes has no --known-at), retired ones included.
    `window`: `prepared_window` of the same bounds, when the caller read it already.
    """
    if window is None:
        window = window_between(store, since=since, until=until)
    return changes_in(store, window, hits(store, window, targets, kind), grant)


def prepared_window(
    store: Store, *, since: dt.datetime, until: dt.datetime, kind: CodeColumn
) -> Window:
    """The window since < recorded_at ≤ until with the codes of `kind` collected: neither
    depends on the targets, so `juki changes` reads them while it parses the target file."""
    window = window_between(store, since=since, until=until)
    window.codes(store, kind)
    return window
