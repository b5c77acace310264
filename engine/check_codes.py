"""The code rules of `juki check` (SPEC §8): uniqueness, the issued-code registry, check digits.

Codes are read as int64 and handed to the kernels of `engine.kernels`: `code-shared` and
`code-not-issued` in `passes` slices by code value (`code % passes`), so that a slice of both
the history and the registry fits in memory; `code-duplicate-current` over the current codes the
walk kept per person; check digits are found by the walk (`check_history`), messages are written
here. As lookups do (SPEC §5: a code matches whoever ever held it, even through a notification
later cancelled), these rules read every applied version's codes, cancelled versions included;
only `X1` rows, which carry the person's codes as they were, are skipped.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.check_history import CHECKED_CODES as CHECKED_COLUMNS
from engine.check_history import FOUND_SCHEMA, HELD_CODES, code_int
from engine.codes import WIDTH, expected_check_digits
from engine.kernels.checkdigits import MALFORMED
from engine.kernels.unique import (
    duplicated_codes,
    missing_codes,
    shared_codes,
    split_by_residue,
)

KIND_COLUMNS = HELD_CODES
KIND_NAMES = {1: "resident_code", 2: "my_number"}


def _held(history: pl.LazyFrame) -> pl.LazyFrame:
    return history.filter(pl.col("reason") != "X1")


def _text(code: pl.Expr, kind: int) -> pl.Expr:
    return code.cast(pl.String).str.zfill(11 if kind == 1 else 12)


def registry_findings(history: pl.LazyFrame, held: dict[int, tuple[np.ndarray, np.ndarray]],
                      registry: pl.LazyFrame, rules: set[str], *,
                      passes: int = 1) -> pl.DataFrame:  # fmt: skip
    """`code-shared` and `code-not-issued` over the history's codes and the issued-code registry.

    `held[kind]` is (codes, persons): every well-formed code of that kind each person held (from
    the walk; taken out of `held` and freed as each kind is done); `registry` has (kind, code, person) of the `codes` table plus the codes issued by
    batches it does not reflect yet. The kernels run in `passes` slices by `code % passes`.
    """
    want_shared, want_missing = "code-shared" in rules, "code-not-issued" in rules
    if not (want_shared or want_missing):
        return pl.DataFrame(schema=FOUND_SCHEMA)
    found = []
    for kind in list(held):
        codes, persons, mine = split_by_residue(*held.pop(kind), passes)  # the input is freed
        issued = registry.filter(pl.col("kind") == kind).select("code", "person").collect()
        issued_codes, issued_persons, theirs = split_by_residue(
            issued["code"].to_numpy(), issued["person"].cast(pl.Int32).to_numpy(), passes)  # fmt: skip
        del issued  # 2 GB at national size; `_shared` reads back the few rows it needs
        shared, missing = [], []
        for part in range(passes):
            a, b = slice(mine[part], mine[part + 1]), slice(theirs[part], theirs[part + 1])
            if want_shared:
                shared.append(shared_codes(np.concatenate([codes[a], issued_codes[b]]),
                                           np.concatenate([persons[a], issued_persons[b]])))  # fmt: skip
            if want_missing:
                missing.append(missing_codes(codes[a], issued_codes[b]))
        del codes, persons, issued_codes, issued_persons
        if shared and sum(map(len, shared)):
            found.append(_shared(history, kind, np.concatenate(shared), registry))
        if missing and sum(map(len, missing)):
            found.append(_missing(history, kind, np.concatenate(missing)))
    if not found:
        return pl.DataFrame(schema=FOUND_SCHEMA)
    return pl.concat(found).cast(FOUND_SCHEMA)  # type: ignore[arg-type]


def _holding_versions(history: pl.LazyFrame, kind: int, codes: np.ndarray) -> pl.DataFrame:
    """(code, person, version, column) of the held versions carrying one of these codes."""
    wanted = pl.Series(codes, dtype=pl.Int64).implode()
    parts = [
        _held(history).select(code=code_int(c, 11 if kind == 1 else 12), person="person",
                              version="version", column=pl.lit(c))
        .filter(pl.col("code").is_in(wanted))
        for c in KIND_COLUMNS[kind]
    ]  # fmt: skip
    return pl.concat(parts).collect()


def _shared(history: pl.LazyFrame, kind: int, shared: np.ndarray,
            registry: pl.LazyFrame) -> pl.DataFrame:  # fmt: skip
    """Every holder of a shared code: its versions carrying it, or none (the registry's)."""
    issued = registry.filter(
        (pl.col("kind") == kind) & pl.col("code").is_in(pl.Series(shared).implode())
    ).select("code", "person", version=pl.lit(None, pl.Int32)).collect()
    rows = pl.concat([
        _holding_versions(history, kind, shared).select("code", "person", "version"), issued,
    ])  # fmt: skip
    holders = rows.group_by("code").agg(holders=pl.col("person").n_unique())
    return rows.join(holders, on="code").select(
        rule=pl.lit("code-shared"), person="person", version="version",
        message=pl.format(f"{KIND_NAMES[kind]} '{{}}' is held by {{}} persons",
                          _text(pl.col("code"), kind), pl.col("holders")),
    )  # fmt: skip


def _missing(history: pl.LazyFrame, kind: int, missing: np.ndarray) -> pl.DataFrame:
    return _holding_versions(history, kind, missing).select(
        rule=pl.lit("code-not-issued"), person="person", version="version",
        message=pl.format("version {}: {} '{}' is not in the issued-code registry",
                          pl.col("version"), pl.col("column"), _text(pl.col("code"), kind)),
    )  # fmt: skip


def check_digit_findings(history: pl.LazyFrame, bad_codes: pl.DataFrame) -> pl.DataFrame:
    """Messages for the codes the walk found with a wrong check digit or malformed
    (`bad_codes`: person, version, column, code): the code as written, the digit it needs."""
    if bad_codes.is_empty():
        return pl.DataFrame(schema=FOUND_SCHEMA)
    texts = (
        _held(history)
        .filter(pl.col("person").is_in(bad_codes["person"].unique().implode()))
        .select("person", "version", *CHECKED_COLUMNS)
        .unpivot(index=["person", "version"], variable_name="column", value_name="text")
        .collect()
    )
    hits = bad_codes.join(texts, on=["person", "version", "column"], how="left")
    should = np.full(len(hits), -1, np.int64)
    for column, kind in CHECKED_COLUMNS.items():
        at = (hits["column"] == column).to_numpy() & (hits["code"].to_numpy() >= 0)
        should[at] = expected_check_digits(hits["code"].to_numpy()[at], kind)
    width = pl.col("column").replace_strict({c: WIDTH[k] for c, k in CHECKED_COLUMNS.items()},
                                            return_dtype=pl.Int64)  # fmt: skip
    return hits.with_columns(should=pl.Series(should)).select(
        rule=pl.lit("check-digit"), person="person", version="version",
        message=pl.when(pl.col("code") == MALFORMED)
        .then(pl.format("version {}: {} '{}': not {} digits", pl.col("version"),
                        pl.col("column"), pl.col("text"), width))
        .otherwise(pl.format("version {}: {} '{}': check digit should be {}",
                             pl.col("version"), pl.col("column"), pl.col("text"),
                             pl.col("should"))),
    ).cast(FOUND_SCHEMA)  # type: ignore[arg-type]


def duplicate_current_findings(current: dict[str, np.ndarray],
                               current_version: np.ndarray) -> pl.DataFrame:  # fmt: skip
    """Persons whose current resident_code or my_number is also another person's current one.

    `current` maps the code column to an array indexed by person key (-1: no current version).
    """
    found = []
    for column, codes in current.items():
        held = codes >= 0
        dups = duplicated_codes(codes[held])
        if len(dups) == 0:
            continue
        persons = np.nonzero(held)[0][pl.Series(codes[held]).is_in(pl.Series(dups).implode())
                                      .to_numpy()]  # fmt: skip
        kind = 1 if column == "resident_code" else 2
        frame = pl.DataFrame({"person": persons.astype(np.int64), "code": codes[persons],
                              "version": current_version[persons]})  # fmt: skip
        holders = frame.group_by("code").agg(holders=pl.len())
        found.append(frame.join(holders, on="code").select(
            rule=pl.lit("code-duplicate-current"), person="person", version="version",
            message=pl.format(f"current {column} '{{}}' is the current {column} of {{}} persons",
                              _text(pl.col("code"), kind), pl.col("holders")),
        ))  # fmt: skip
    if not found:
        return pl.DataFrame(schema=FOUND_SCHEMA)
    return pl.concat(found).cast(FOUND_SCHEMA)  # type: ignore[arg-type]
