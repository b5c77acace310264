"""Per-municipality sequencing of a batch (SPEC §4): duplicates, held rows and release order.

`seq` is consecutive per municipality across all batches. A row whose `(municipality_code, seq)`
was already used or held (or repeats inside the file) is a duplicate; a row that skips ahead is
held until the gap fills. A row applies at the moment the last row of its run arrives: its
application time is the running maximum of file positions over its municipality's sorted seqs
(held rows from earlier batches have position -1), so rows apply in file order and a held row
right after the row that completes its run.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from engine.codes import check_digit_expr


@dataclass(frozen=True)
class Sequenced:
    """A batch split by sequencing; frames keep the batch's `_pos` (0-based file position)."""

    unsequenced: pl.DataFrame  # no usable (municipality_code, seq): rejected by the row rules
    duplicates: pl.DataFrame
    held_on_arrival: pl.DataFrame  # file rows that skip ahead (some may be released below)
    to_apply: pl.DataFrame  # file and released rows in application order: `_at`, `_from_held`
    still_held: pl.DataFrame  # earlier held rows (store) that stay held


def seq_number() -> pl.Expr:
    """The `seq` text as an integer (null when unreadable)."""
    return pl.col("seq").str.strip_chars().cast(pl.Int64, strict=False)


def used_already(batch: pl.DataFrame, positions: pl.DataFrame) -> pl.Series:
    """Per text row whether its seq is at or below its municipality's position: a duplicate,
    whatever else the row holds."""
    used = batch.select("municipality_code", _seq=seq_number()).join(
        positions, on="municipality_code", how="left", maintain_order="left")  # fmt: skip
    return (used["_seq"] <= used["last_seq"]).fill_null(False)


def usable_key() -> pl.Expr:
    """A municipality code with valid form and check digit, and a seq ≥ 1."""
    mc = pl.col("municipality_code")
    as_int = mc.cast(pl.Int64, strict=False)
    pref = mc.str.slice(0, 2).cast(pl.Int64, strict=False)
    seq = seq_number()
    return (
        mc.str.contains(r"^[0-9]{6}$")
        & (as_int % 10 == check_digit_expr(as_int, "municipality_code"))
        & pref.is_between(1, 47)
        & (seq >= 1)
    ).fill_null(False)


def sequence(batch: pl.DataFrame, positions: pl.DataFrame, held: pl.DataFrame) -> Sequenced:
    """Split `batch` (text rows with `_pos`) given `positions` (municipality_code, last_seq) and
    earlier `held` rows (text rows with municipality_code and `_seq`)."""
    batch = batch.with_columns(
        _seq=seq_number(), _usable=usable_key()
    )
    fast = _in_order(batch, positions, held)
    if fast is not None:
        return fast
    unsequenced = batch.filter(~pl.col("_usable")).drop("_usable")
    keyed = batch.filter(pl.col("_usable")).drop("_usable")
    keyed = keyed.join(positions, on="municipality_code", how="left").with_columns(
        pl.col("last_seq").fill_null(0)
    )
    already_held = held.select("municipality_code", "_seq").with_columns(_was_held=pl.lit(True))
    keyed = keyed.join(already_held, on=["municipality_code", "_seq"], how="left")
    repeat = pl.struct("municipality_code", "_seq").is_first_distinct().not_()
    is_dup = (pl.col("_seq") <= pl.col("last_seq")) | pl.col("_was_held").is_not_null() | repeat
    keyed = keyed.sort("_pos").with_columns(_dup=is_dup)
    duplicates = keyed.filter(pl.col("_dup")).drop("_dup", "_was_held", "last_seq")
    fresh = keyed.filter(~pl.col("_dup")).drop("_dup", "_was_held", "last_seq")

    held_keyed = held.with_columns(_pos=pl.lit(-1, pl.Int64), _from_held=pl.lit(True))
    candidates = pl.concat(
        [fresh.with_columns(_from_held=pl.lit(False)), held_keyed], how="diagonal_relaxed"
    )
    candidates = (
        candidates.join(positions, on="municipality_code", how="left")
        .with_columns(pl.col("last_seq").fill_null(0))
        .sort("municipality_code", "_seq")
        .with_columns(
            _rank=pl.int_range(1, pl.len() + 1).over("municipality_code"),
            _at=pl.col("_pos").cum_max().over("municipality_code"),
        )
        .with_columns(_runs=pl.col("_seq") == pl.col("last_seq") + pl.col("_rank"))
    )
    to_apply = candidates.filter(pl.col("_runs")).sort("_at", "_seq")
    waiting = candidates.filter(~pl.col("_runs"))
    arrivals = candidates.filter(
        ~pl.col("_from_held") & (~pl.col("_runs") | (pl.col("_at") > pl.col("_pos")))
    )
    tidy = ["last_seq", "_rank", "_runs"]
    return Sequenced(
        unsequenced=unsequenced,
        duplicates=duplicates,
        held_on_arrival=arrivals.drop(tidy).sort("_pos"),
        to_apply=to_apply.drop(tidy),
        still_held=waiting.filter(pl.col("_from_held")).drop(tidy),
    )


def _in_order(batch: pl.DataFrame, positions: pl.DataFrame, held: pl.DataFrame) -> Sequenced | None:
    """The common case, cheaply: every row usable and each municipality's rows continue its seq
    in file order, with nothing held for them. Else None (take the general path)."""
    if not batch["_usable"].all():
        return None
    if held.height and held["municipality_code"].is_in(batch["municipality_code"].implode()).any():
        return None
    # (the two key columns only: joining the whole batch copied every column of every row)
    ranked = (
        batch.select("municipality_code", "_seq")
        .join(positions, on="municipality_code", how="left", maintain_order="left")
        .with_columns(_rank=pl.int_range(1, pl.len() + 1).over("municipality_code"))
    )
    if not (ranked["_seq"] == ranked["last_seq"].fill_null(0) + ranked["_rank"]).all():
        return None
    empty = batch.clear().drop("_usable")
    return Sequenced(
        unsequenced=empty,
        duplicates=empty,
        held_on_arrival=empty,
        to_apply=batch.drop("_usable").with_columns(_at=pl.col("_pos"), _from_held=pl.lit(False)),
        still_held=held.clear(),
    )
