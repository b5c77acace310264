"""The periodic change check (定期照会, SPEC §5 `juki changes`).

For each target with notifications recorded in the window (since < recorded_at ≤ until): the
reasons in application order (cancelled notifications and the X1 itself included), the first
and last change dates, the record as known at `until` and the previous name and address as known
at `since`.

Fast path (DESIGN W1): the window's notifications are few (≈ 1.7 M a month) and the targets
many (≈ 100 M). Collect every code the window's persons ever held, parse the targets to int64
and semi-join them against that small set; only the hits get records, previous values and
provision records. The targets are never resolved in full nor joined with `current`.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from engine.access import Grant, in_scope, provided_columns, withhold
from engine.dates import japan_date
from engine.history import effective_on, scan_history
from engine.resolve import CodeColumn, codes_of_persons, known_batch, parse_codes
from engine.schema import RECORD_COLUMNS
from engine.store import Store

PREVIOUS = ("surname", "given_name", "address", "municipality_code")
OWN_COLUMNS = ["reasons", "first_change_date", "last_change_date"]


def window_rows(store: Store, *, since: dt.datetime, until: dt.datetime) -> pl.DataFrame:
    """Every notification applied in the window, in application order."""
    return (
        scan_history(store)
        .filter((pl.col("recorded_at") > since) & (pl.col("recorded_at") <= until))
        .select("person", "batch", "apply_order", "reason", "change_date", "resident_code")
        .sort("batch", "apply_order")
        .collect()
    )


def hits(
    store: Store, targets: pl.DataFrame, kind: CodeColumn, persons: pl.Series
) -> pl.DataFrame:
    """(request_row, person) of the targets naming a person of the window, in request order.

    Codes are matched as known now (changes has no --known-at), retired ones included.
    """
    codes = codes_of_persons(store, persons, kind, upto_batch=None)
    return (
        targets.lazy()
        .select("request_row", code=parse_codes(pl.col("code"), kind))
        .join(codes.lazy(), on="code", how="inner", maintain_order="left")
        .select("request_row", "person")
        .collect(engine="in-memory")  # the streaming engine keeps join order far more slowly
    )


def previous_names(grant: Grant) -> list[str]:
    """previous_* columns appear only where the column they precede is in the output."""
    return [f"previous_{c}" for c in PREVIOUS if c in grant.columns]


def changes(
    store: Store,
    targets: pl.DataFrame,
    kind: CodeColumn,
    grant: Grant,
    *,
    since: dt.datetime,
    until: dt.datetime,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(output rows, provided records) for the targets (`request_row`, `code` text)."""
    window = window_rows(store, since=since, until=until)
    found = hits(store, targets, kind, window["person"].unique())
    persons = found["person"].unique()
    summary = (
        window.filter(pl.col("person").is_in(persons.implode()))
        .group_by("person", maintain_order=True)
        .agg(
            reasons=pl.col("reason"),
            first_change_date=pl.col("change_date").min(),
            last_change_date=pl.col("change_date").max(),
            _last_code=pl.col("resident_code").last(),
        )
    )
    # Every hit person has notifications after `since`: read their whole histories once (one
    # journal scan), and take both versions from them, never from `current`.
    history = (
        scan_history(store)
        .filter(pl.col("person").is_in(persons.implode()))
        .select("batch", "apply_order", "reason", "change_date", "seq",
                "cancels_municipality_code", "cancels_seq", "person", *RECORD_COLUMNS)
        .collect()
    )  # fmt: skip
    upto_until, upto_since = known_batch(store, until), known_batch(store, since)
    now = effective_on(history.lazy().filter(pl.col("batch") <= upto_until), japan_date(until),
                       ["person", *RECORD_COLUMNS])  # fmt: skip
    before = effective_on(
        history.lazy().filter(pl.col("batch") <= upto_since), japan_date(since),
        ["person", *PREVIOUS],
    ).select("person", *[pl.col(c).alias(f"previous_{c}") for c in PREVIOUS])
    rows = (
        found.lazy()
        .join(summary.lazy(), on="person", how="left", maintain_order="left")
        .join(now.with_columns(_has_version=pl.lit(True)), on="person", how="left",
              maintain_order="left")
        .join(before, on="person", how="left", maintain_order="left")
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
    columns = ["request_row", *grant.output_columns, *OWN_COLUMNS, *previous_names(grant)]
    return result.select(columns), provided
