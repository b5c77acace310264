"""The history rules of `juki check` (SPEC §8): per-person walks and per-version record rules.

The history is every applied or released journal row up to the checked batch. Per-person rules
run in `engine.kernels.history` over integer columns sorted by (person, application order); the
population is split into `passes` slices by person key so that memory follows the slice, not the
nation. Record rules (one version at a time) are lazy Polars over the journal, streamed, skipping
`X1` versions and the versions they cancel as reads do.

Every rule yields rows `(rule, person, version, message)`; `engine.check` folds them per person.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.codes import CodeKind
from engine.kernels.checkdigits import MALFORMED, NULL, bad_check_digits
from engine.kernels.history import (
    A2_WITHOUT_D1,
    AFTER_DEATH,
    CANCELLED,
    IN_EFFECT,
    MOVE_IN_DAYS,
    MOVE_IN_LATE,
    NO_DATE,
    STATUS_REASON,
    VERSION_ORDER,
    held_codes,
    remember_current,
    walk_histories,
)
from engine.schema import REASON_NAMES, REASONS
from engine.validate import KANA_FOREIGN

APPLIED = ["applied", "released"]
EPOCH = dt.date(1970, 1, 1)
JST_OFFSET_US = 9 * 3600 * 10**6  # Japan has kept +09:00 without daylight saving since 1951
DAY_US = 86_400 * 10**6
MAX_AGE = 120
X1 = REASONS["X1"]

WALK_RULES = {
    "version-order": VERSION_ORDER,
    "after-death": AFTER_DEATH,
    "a2-without-d1": A2_WITHOUT_D1,
    "status-reason": STATUS_REASON,
    "move-in-late": MOVE_IN_LATE,
}
RECORD_RULES = (
    "birth-after-change", "prefecture-mismatch", "former-surname-pair", "alias-japanese",
    "former-surname-foreign", "kana", "change-after-recorded",
)  # fmt: skip
FOUND_SCHEMA = {"rule": pl.String, "person": pl.Int64, "version": pl.Int32, "message": pl.String}


def applied_history(journal: str, *, version: int) -> pl.LazyFrame:
    """Applied and released journal rows (the history) in one snapshot of the journal."""
    return pl.scan_delta(journal, version=version).filter(pl.col("outcome").is_in(APPLIED))


def code_int(column: str, width: int) -> pl.Expr:
    """A code column as int64: NULL when null, MALFORMED unless exactly `width` ASCII digits."""
    c = pl.col(column)
    value = c.cast(pl.Int64, strict=False)
    ok = (c.str.len_bytes() == width) & value.is_not_null() & (value >= 0) & ~c.str.starts_with("+")
    return (
        pl.when(c.is_null()).then(pl.lit(NULL, pl.Int64))
        .when(ok).then(value)
        .otherwise(pl.lit(MALFORMED, pl.Int64))
    )  # fmt: skip


def _notification(mc: str, seq: str) -> pl.Expr:
    m = pl.col(mc).cast(pl.Int64, strict=False)
    return (m * (1 << 40) + pl.col(seq)).fill_null(-1)


# Code columns whose check digits are checked (SPEC §2), with their kind.
CHECKED_CODES: dict[str, CodeKind] = {
    "resident_code": "resident_code",
    "my_number": "my_number",
    "municipality_code": "municipality_code",
    "previous_resident_code": "resident_code",
}


def _walk_columns(check_digits: bool) -> list[pl.Expr]:
    is_x1 = pl.col("reason") == "X1"
    columns = [
        pl.col("person"),
        pl.col("version"),
        (pl.col("batch") * (1 << 32) + pl.col("apply_order")).alias("order"),
        pl.col("recorded_at").dt.epoch("us").alias("recorded_us"),
        pl.col("reason").replace_strict(REASONS, default=0, return_dtype=pl.Int8).alias("reason_id"),
        pl.col("status").fill_null(0),
        pl.col("change_date").cast(pl.Int32).fill_null(NO_DATE).alias("change_day"),
        pl.col("birth_date").cast(pl.Int32).alias("birth_day"),
        pl.when(is_x1).then(_notification("cancels_municipality_code", "cancels_seq"))
        .otherwise(_notification("municipality_code", "seq")).alias("notification"),
        code_int("resident_code", 11).alias("resident_code"),
        code_int("my_number", 12).alias("my_number"),
        code_int("previous_resident_code", 11).alias("previous_resident_code"),
    ]  # fmt: skip
    if check_digits:
        columns.append(code_int("municipality_code", 6).alias("municipality_code"))
    return columns


@dataclass
class WalkResult:
    """What the walks leave for the other rules: findings, skipped versions, current codes."""

    found: pl.DataFrame  # rule, person, version, message
    skipped: pl.DataFrame  # person, version of X1 and cancelled versions
    bad_codes: pl.DataFrame  # person, version, column, code: check digit wrong or malformed
    held_codes: dict[int, tuple[np.ndarray, np.ndarray]]  # kind: (codes, persons) ever held
    resident_of: np.ndarray  # per person key: current resident code (else last held), -1 none
    current_rc: np.ndarray  # per person key: resident code of the current version, -1 none
    current_mn: np.ndarray
    current_version: np.ndarray  # per person key: the current version, -1 none


# Per registry kind (SPEC §2.4: separate spaces), the history columns holding such codes.
HELD_CODES = {1: ("resident_code", "previous_resident_code"), 2: ("my_number",)}
BAD_CODES_SCHEMA = {"person": pl.Int64, "version": pl.Int32, "column": pl.String, "code": pl.Int64}


def walk(history: pl.LazyFrame, *, persons: int, today: dt.date, rules: set[str],
         passes: int = 1) -> WalkResult:  # fmt: skip
    """Run the per-person kernel (and the check-digit kernel) over the history, `passes`
    slices of persons at a time (person keys below `persons`, the last slice open-ended); per
    person key, keep the current codes."""
    today_day = (today - EPOCH).days
    check_digits = "check-digit" in rules
    per_person = [np.full(persons, NULL, np.int64) for _ in range(3)] + [
        np.full(persons, -1, np.int32)]  # fmt: skip
    found: list[pl.DataFrame] = []
    skipped: list[pl.DataFrame] = []
    bad: list[pl.DataFrame] = []
    held: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {1: [], 2: []}
    for part in range(passes):
        # Ranges of person keys: keys follow registration, so most files and row groups of a
        # range are skipped by their statistics (a modulo would read every one of them).
        lo, hi = part * persons // passes, (part + 1) * persons // passes
        sliced = history
        if passes > 1:
            upper = pl.col("person") < hi if part + 1 < passes else pl.lit(True)
            sliced = sliced.filter((pl.col("person") >= lo) & upper)
        for rows in _grouped(sliced.select(_walk_columns(check_digits)).collect()):
            top = int(rows["person"].max()) + 1  # type: ignore[arg-type]
            if top > len(per_person[0]):  # a person key past the head's (written past ingest)
                per_person = [np.concatenate([a, np.full(top - len(a), -1, a.dtype)])
                              for a in per_person]  # fmt: skip
            person, reason = rows["person"].to_numpy(), rows["reason_id"].to_numpy()
            flags = walk_histories(
                person, rows["version"].fill_null(0).to_numpy(),
                rows["recorded_us"].fill_null(0).to_numpy(), reason, rows["status"].to_numpy(),
                rows["change_day"].to_numpy(), rows["notification"].to_numpy(), today_day,
            )  # fmt: skip
            remember_current(person, reason, flags, rows["resident_code"].to_numpy(),
                             rows["my_number"].to_numpy(), rows["version"].fill_null(0).to_numpy(),
                             *per_person)  # fmt: skip
            skipped.append(rows[np.nonzero((reason == X1) | (flags & CANCELLED > 0))[0]]
                           .select("person", "version"))  # fmt: skip
            found.append(_walk_findings(rows, flags, rules))
            if "over-120" in rules:
                found.append(_over_120(rows, flags, today, today_day))
            if check_digits:
                bad.append(_bad_codes(rows, reason != X1))
            for kind, columns in HELD_CODES.items():
                held[kind] += [held_codes(person, reason, rows[c].to_numpy()) for c in columns]
    return WalkResult(
        found=pl.concat(found) if found else pl.DataFrame(schema=FOUND_SCHEMA),
        skipped=pl.concat(skipped) if skipped else pl.DataFrame(
            schema={"person": pl.Int64, "version": pl.Int32}),
        bad_codes=pl.concat(bad) if bad else pl.DataFrame(schema=BAD_CODES_SCHEMA),
        held_codes=_joined(held),
        resident_of=per_person[0], current_rc=per_person[1], current_mn=per_person[2],
        current_version=per_person[3],
    )  # fmt: skip


def _joined(
    held: dict[int, list[tuple[np.ndarray, np.ndarray]]],
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each kind's pieces as one (codes, persons) pair, freeing pieces as they are joined (at
    national size each kind is ~2 GB: joining both while holding every piece doubled that)."""
    out = {}
    for kind in list(held):
        parts = held.pop(kind)
        codes = np.concatenate([c for c, _ in parts] or [np.zeros(0, np.int64)])
        owners = [p for _, p in parts]
        del parts
        out[kind] = (codes, np.concatenate(owners or [np.zeros(0, np.int32)]))
        del owners
    return out


def _bad_codes(rows: pl.DataFrame, held: np.ndarray) -> pl.DataFrame:
    """Codes of held versions (X1 rows carry copies) whose check digit is wrong or malformed."""
    parts = []
    for column, kind in CHECKED_CODES.items():
        at = np.nonzero(bad_check_digits(rows[column].to_numpy(), kind) & held)[0]
        if len(at):
            parts.append(rows[at].select("person", "version", column=pl.lit(column),
                                         code=pl.col(column)))  # fmt: skip
    return pl.concat(parts) if parts else pl.DataFrame(schema=BAD_CODES_SCHEMA)


def _grouped(rows: pl.DataFrame) -> list[pl.DataFrame]:
    """The rows grouped by person, each person's in application order: persons with one row
    as they come (most of the nation), the others sorted (only they pay for a sort)."""
    if rows.is_empty():
        return []
    person = rows["person"].to_numpy()
    several = np.bincount(person)[person] > 1
    if not several.any():
        return [rows]
    return [rows.filter(pl.Series(~several)),
            rows.filter(pl.Series(several)).sort("person", "order")]  # fmt: skip


def _day(column: str) -> pl.Expr:
    return pl.lit(EPOCH) + pl.duration(days=pl.col(column))


def _walk_findings(rows: pl.DataFrame, flags: np.ndarray, rules: set[str]) -> pl.DataFrame:
    """One row per flagged version and rule, with its message."""
    wanted = {r: bit for r, bit in WALK_RULES.items() if r in rules}
    mask = sum(int(b) for b in wanted.values())
    at = np.nonzero(flags & mask)[0] if mask else np.zeros(0, np.int64)
    if not len(at):
        return pl.DataFrame(schema=FOUND_SCHEMA)
    before = np.maximum(at - 1, 0)
    person = rows["person"].to_numpy()
    same = (at > 0) & (person[before] == person[at])
    flagged = rows[at].with_columns(
        prev_version=pl.Series(np.where(same, rows["version"].to_numpy()[before], 0)),
        same=pl.Series(same),
        flags=pl.Series(flags[at]),
        late=pl.Series(same & (rows["recorded_us"].to_numpy()[before]
                               > rows["recorded_us"].to_numpy()[at])),
    )  # fmt: skip
    flagged = flagged.with_columns(
        prev_text=pl.when(pl.col("same"))
        .then(pl.concat_str(pl.lit("version "), pl.col("prev_version").cast(pl.String)))
        .otherwise(pl.lit("nothing")),
    )  # fmt: skip
    flagged = flagged.with_columns(
        order_message=pl.when(pl.col("late"))
        .then(pl.format("version {} recorded before {} that precedes it", pl.col("version"),
                        pl.col("prev_text")))
        .otherwise(pl.format("version {} follows {} in application order (versions run 1…n)",
                             pl.col("version"), pl.col("prev_text"))),
    )  # fmt: skip
    v = pl.col("version")
    reason = pl.col("reason_id").replace_strict(REASON_NAMES, default="?", return_dtype=pl.String)
    messages = {
        "version-order": pl.col("order_message"),
        "after-death": pl.format("version {} ({}) follows a death (D3): only X1 may", v, reason),
        "a2-without-d1": pl.format("version {} (A2) without an open D1", v),
        "status-reason": pl.format("version {} ({}) has status {}, which reason {} does not give",
                                   v, reason, pl.col("status"), reason),
        "move-in-late": pl.format("version {}: D1 dated {} with no A2 dated by {}", v,
                                  _day("change_day"),
                                  _day("change_day") + pl.duration(days=MOVE_IN_DAYS)),
    }  # fmt: skip
    parts = [
        flagged.filter(pl.col("flags") & int(bit) > 0).select(
            rule=pl.lit(rule), person="person", version="version", message=messages[rule]
        )
        for rule, bit in wanted.items()
    ]
    return pl.concat(parts)


def age_on(birth_day: pl.Expr, day: int) -> pl.Expr:
    """Age on `day` (days since 1970) per 年齢計算ニ関スル法律: a year is gained at the end of the
    day before the birthday, so age = completed years to day + 1 (yyyymmdd arithmetic)."""
    after = EPOCH + dt.timedelta(days=day + 1)
    born = (pl.lit(EPOCH) + pl.duration(days=birth_day)).dt
    yyyymmdd = born.year() * 10_000 + born.month() * 100 + born.day()
    return (after.year * 10_000 + after.month * 100 + after.day - yyyymmdd) // 10_000


def _over_120(rows: pl.DataFrame, flags: np.ndarray, today: dt.date,
              today_day: int) -> pl.DataFrame:  # fmt: skip
    """Registered today (the version in effect has status 1) and older than 120."""
    born = rows["birth_day"].fill_null(today_day).to_numpy()
    old = (flags & IN_EFFECT > 0) & (rows["status"].to_numpy() == 1)
    old &= born < today_day - 365 * MAX_AGE  # a coarse bound first: few rows get an exact age
    return (
        rows[np.nonzero(old)[0]]
        .with_columns(age=age_on(pl.col("birth_day"), today_day))
        .filter(pl.col("age") > MAX_AGE)
        .select(
            rule=pl.lit("over-120"), person="person", version="version",
            message=pl.format("version {}: born {}, aged {} on {} and still registered",
                              pl.col("version"), _day("birth_day"), pl.col("age"),
                              pl.lit(today.isoformat())),
        )
    )


def _record_conditions() -> dict[str, tuple[pl.Expr, pl.Expr]]:
    """Per record rule: (breaks, message), over one effective version."""
    v = pl.col("version")
    kind = pl.col("resident_kind")
    recorded_day = (pl.col("recorded_at").dt.epoch("us") + JST_OFFSET_US) // DAY_US
    change_day = pl.col("change_date").cast(pl.Int32)
    out: dict[str, tuple[pl.Expr, pl.Expr]] = {
        "birth-after-change": (
            pl.col("birth_date") > pl.col("change_date"),
            pl.format("version {}: birth_date {} is after change_date {}", v,
                      pl.col("birth_date"), pl.col("change_date")),
        ),
        "prefecture-mismatch": (
            pl.col("prefecture_code").ne_missing(pl.col("municipality_code").str.slice(0, 2)),
            pl.format("version {}: prefecture_code '{}' is not the first two digits of "
                      "municipality_code '{}'", v, pl.col("prefecture_code").fill_null("null"),
                      pl.col("municipality_code")),
        ),
        "former-surname-pair": (
            pl.col("former_surname").is_null() != pl.col("former_surname_kana").is_null(),
            pl.format("version {}: former_surname and former_surname_kana: both or neither", v),
        ),
        "alias-japanese": (
            pl.col("alias").is_not_null() & (kind == 1),
            pl.format("version {}: alias '{}' for a Japanese resident (resident_kind 1)", v,
                      pl.col("alias")),
        ),
        "former-surname-foreign": (
            pl.col("former_surname").is_not_null() & (kind == 2),
            pl.format("version {}: former_surname '{}' for a foreign resident (resident_kind 2)",
                      v, pl.col("former_surname")),
        ),
        "change-after-recorded": (
            (pl.col("reason") != "D1") & (change_day > recorded_day),
            pl.format("version {}: change_date {} is after its recorded_at date {}", v,
                      pl.col("change_date"), (pl.lit(EPOCH) + pl.duration(days=recorded_day))),
        ),
    }  # fmt: skip
    bad_kana = []
    for name in ("surname_kana", "given_name_kana", "former_surname_kana"):
        c = pl.col(name)
        # SPEC §1: ァ-ヶ and ー; the middle dot ・ only in foreign names.
        wrong = c.is_not_null() & (
            ~c.str.contains(KANA_FOREIGN) | ((kind != 2) & c.str.contains("・", literal=True))
        )
        bad_kana.append((wrong, pl.format(f"{name} '{{}}'", c)))
    out["kana"] = (
        pl.any_horizontal([w for w, _ in bad_kana]).fill_null(False),
        pl.format("version {}: {} is not full-width katakana (ァ-ヶ, ー; ・ for foreign names)", v,
                  pl.coalesce([pl.when(w).then(m) for w, m in bad_kana])),
    )  # fmt: skip
    return out


RECORD_INPUTS = [
    "person", "version", "reason", "birth_date", "change_date", "recorded_at", "prefecture_code",
    "municipality_code", "resident_kind", "surname_kana", "given_name_kana", "former_surname",
    "former_surname_kana", "alias",
]  # fmt: skip


def record_findings(history: pl.LazyFrame, skipped: pl.DataFrame, rules: set[str]) -> pl.DataFrame:
    """Rows of the record rules over the effective versions (X1 and cancelled ones skipped).

    One streaming pass reads only the columns the rules name; messages are written for the
    (few) versions that break a rule."""
    conditions = {r: c for r, c in _record_conditions().items() if r in rules}
    if not conditions:
        return pl.DataFrame(schema=FOUND_SCHEMA)
    effective = (
        history.filter(pl.col("reason") != "X1")
        .select(RECORD_INPUTS)
        .join(skipped.lazy(), on=["person", "version"], how="anti")
    )
    flagged = (
        effective.with_columns(
            [cond.fill_null(False).alias(f"_{rule}") for rule, (cond, _) in conditions.items()]
        )
        .filter(pl.any_horizontal([pl.col(f"_{rule}") for rule in conditions]))
        .collect(engine="streaming")
    )
    parts = [
        flagged.filter(pl.col(f"_{rule}")).select(
            rule=pl.lit(rule), person="person", version="version", message=message
        )
        for rule, (_, message) in conditions.items()
    ]
    return pl.concat(parts).cast(FOUND_SCHEMA)  # type: ignore[arg-type]
