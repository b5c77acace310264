"""Row rules of a change notification that need no state (SPEC §1–§4), vectorised in Polars.

`validate_rows` takes the text form of notification rows (every column Utf8, as read from CSV or
cast from Parquet) and returns the typed columns plus `rule`, `reject_column` and `message` of the
first rule each row breaks (null when it breaks none), in the order of SPEC §4's rule list.
Rules that need the person's state (`unknown-person` … `x1-target`) live in `engine/transitions`.
"""

from __future__ import annotations

import functools

import numpy as np
import polars as pl

from engine.codes import WIDTH, CodeKind
from engine.codes import expected_check_digits as numpy_check_digits
from engine.schema import REASONS

# SPEC §1: full-width katakana ァ-ヶ and ー; the middle dot ・ for foreign names only.
KANA_JAPANESE = r"^[ァ-ヶー]+$"
KANA_FOREIGN = r"^[ァ-ヶー・]+$"
DATE_FORM = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

# Columns every non-X1 row needs; every row needs the sequencing and code columns.
ALWAYS_REQUIRED = ["municipality_code", "seq", "reason", "change_date", "resident_code", "my_number"]
RECORD_REQUIRED = [
    "surname", "given_name", "surname_kana", "given_name_kana", "birth_date", "sex", "address",
    "resident_kind",
]  # fmt: skip
RECORD_ONLY = [
    "surname", "given_name", "surname_kana", "given_name_kana", "former_surname",
    "former_surname_kana", "alias", "birth_date", "sex", "address", "resident_kind", "protected",
]  # fmt: skip


def _col(name: str) -> pl.Expr:
    return pl.col(name)


def _int(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars().cast(pl.Int64, strict=False)


def _date(name: str) -> pl.Expr:
    c = pl.col(name)
    return pl.when(c.str.contains(DATE_FORM)).then(c.str.to_date("%Y-%m-%d", strict=False))


def parse_timestamp(name: str) -> pl.Expr:
    """ISO 8601 text → timestamp[us, UTC]; without a zone it is Japan time (SPEC §5)."""
    c = pl.col(name).str.replace(" ", "T").str.replace(r"Z$", "+00:00")
    has_zone = c.str.contains(r"[+-][0-9]{2}:?[0-9]{2}$")
    zoned = c.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us")
    naive = (
        c.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
        .fill_null(c.str.to_datetime("%Y-%m-%dT%H:%M", strict=False, time_unit="us"))
        .fill_null(c.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")))
        .dt.replace_time_zone("Asia/Tokyo")
    )
    return (
        pl.when(has_zone)
        .then(zoned.dt.convert_time_zone("UTC"))
        .otherwise(naive.dt.convert_time_zone("UTC"))
    )


# Parquet input may carry `notified_at` typed beside its text form: then it is not parsed back.
TYPED_NOTIFIED_AT = "_typed_notified_at"

PARSED = {
    "seq": lambda: _int("seq"),
    "change_date": lambda: _date("change_date"),
    "birth_date": lambda: _date("birth_date"),
    "sex": lambda: _int("sex"),
    "resident_kind": lambda: _int("resident_kind"),
    "protected": lambda: _bool("protected"),
    "cancels_seq": lambda: _int("cancels_seq"),
}
CODE_KINDS = {
    "municipality_code": "municipality_code",
    "resident_code": "resident_code",
    "my_number": "my_number",
    "previous_resident_code": "resident_code",
    "cancels_municipality_code": "municipality_code",
}


def _p(name: str) -> pl.Expr:
    """A value parsed once per batch (see `_with_parsed`)."""
    return pl.col(f"_p_{name}")


def _with_parsed(frame: pl.DataFrame) -> pl.DataFrame:
    """Parse every typed value once, and the check digit each code should carry (NumPy)."""
    frame = frame.with_columns(
        *[make().alias(f"_p_{name}") for name, make in PARSED.items()],
        *[pl.col(c).cast(pl.Int64, strict=False).alias(f"_i_{c}") for c in CODE_KINDS],
        _p_notified_at=_notified_at(frame),
    )
    expected = []
    for column, kind in CODE_KINDS.items():
        ints = frame[f"_i_{column}"]
        digits = _expected_digits(ints.fill_null(0).to_numpy(), kind)  # type: ignore[arg-type]
        expected.append(pl.Series(f"_x_{column}", digits, dtype=pl.Int64))
    return frame.with_columns(expected)


# From this many rows the check digits run in the parallel numba kernel (a NumPy pass per digit
# took ~3 s of a 10 M load); below it NumPy, sparing a small batch the kernel's ~0.2 s first load.
KERNEL_ROWS = 100_000


def _expected_digits(ints: np.ndarray, kind: CodeKind) -> np.ndarray:
    if len(ints) < KERNEL_ROWS:
        return numpy_check_digits(ints, kind)
    from engine.kernels.checkdigits import expected_check_digits

    return expected_check_digits(ints, kind)


def _notified_at(frame: pl.DataFrame) -> pl.Series:
    """notified_at as timestamp[us, UTC]: the typed value where the input had one, else parsed
    from the text (only those rows are parsed)."""
    if TYPED_NOTIFIED_AT not in frame.columns:
        return frame.select(parse_timestamp("notified_at")).to_series()
    typed = frame[TYPED_NOTIFIED_AT]
    need = typed.is_null() & frame["notified_at"].is_not_null()
    if not need.any():
        return typed
    parsed = frame.filter(need).select(parse_timestamp("notified_at")).to_series()
    return typed.scatter(need.arg_true(), parsed)


def _bool(name: str) -> pl.Expr:
    c = pl.col(name).str.to_lowercase()
    return pl.when(c == "true").then(True).when(c == "false").then(False)


def _fail(rule: str, column: str | None, message: pl.Expr | str) -> pl.Expr:
    msg = pl.lit(message) if isinstance(message, str) else message
    return pl.struct(
        rule=pl.lit(rule), reject_column=pl.lit(column, dtype=pl.String), message=msg
    )


@functools.cache
def _rules() -> list[tuple[pl.Expr, pl.Expr]]:
    """(breaks, failure) pairs in the order of SPEC §4's rule list; the first that holds wins."""
    is_x1 = pl.col("reason") == "X1"
    rec = ~is_x1  # record columns are ignored on X1 rows
    kind = _p("resident_kind")
    rules: list[tuple[pl.Expr, pl.Expr]] = []

    def add(cond: pl.Expr, rule: str, column: str | None, message: pl.Expr | str) -> None:
        rules.append((cond.fill_null(False), _fail(rule, column, message)))

    # unreadable-value: a value present that its type cannot parse.
    for name, what, scope in [
        ("seq", "an integer", None),
        ("change_date", "a date YYYY-MM-DD", None),
        ("birth_date", "a date YYYY-MM-DD", rec),
        ("sex", "an integer", rec),
        ("resident_kind", "an integer", rec),
        ("protected", "true or false", rec),
        ("cancels_seq", "an integer", is_x1),
        ("notified_at", "an ISO 8601 timestamp", None),
    ]:
        cond = _col(name).is_not_null() & _p(name).is_null()
        add(cond if scope is None else cond & scope, "unreadable-value", name,
            pl.format(f"{name} '{{}}': not {what}", _col(name)))  # fmt: skip
    add(_p("seq") < 1, "unreadable-value", "seq",
        pl.format("seq '{}': must be 1 or more", _col("seq")))  # fmt: skip

    # missing-field: required by every row, by every record row, by M5 and by X1.
    for name in ALWAYS_REQUIRED:
        add(_col(name).is_null(), "missing-field", name, f"{name}: required")
    for name in RECORD_REQUIRED:
        add(rec & _col(name).is_null(), "missing-field", name,
            pl.format(f"{name}: required for reason {{}}", _col("reason")))  # fmt: skip
    add((pl.col("reason") == "M5") & _col("previous_resident_code").is_null(), "missing-field",
        "previous_resident_code", "previous_resident_code: required for reason M5")  # fmt: skip
    for name in ("cancels_municipality_code", "cancels_seq"):
        add(is_x1 & _col(name).is_null(), "missing-field", name, f"{name}: required for reason X1")

    add(~pl.col("reason").is_in(list(REASONS)), "unknown-reason", "reason",
        pl.format("reason '{}': not a change reason of SPEC §3", _col("reason")))  # fmt: skip

    codes = [
        ("municipality_code", "municipality_code", None),
        ("resident_code", "resident_code", None),
        ("my_number", "my_number", None),
        ("previous_resident_code", "resident_code", pl.col("reason") == "M5"),
        ("cancels_municipality_code", "municipality_code", is_x1),
    ]
    for name, kind_name, scope in codes:
        w = WIDTH[kind_name]
        cond = _col(name).is_not_null() & ~_col(name).str.contains(rf"^[0-9]{{{w}}}$")
        add(cond if scope is None else cond & scope, "code-format", name,
            pl.format(f"{name} '{{}}': must be {w} digits", _col(name)))  # fmt: skip
    for name, _, scope in codes:
        expected = pl.col(f"_x_{name}")
        cond = pl.col(f"_i_{name}") % 10 != expected
        add(cond if scope is None else cond & scope, "check-digit", name,
            pl.format(f"{name} '{{}}': check digit should be {{}}", _col(name), expected))  # fmt: skip
    for name, scope in (("municipality_code", None), ("cancels_municipality_code", is_x1)):
        pref = _col(name).str.slice(0, 2).cast(pl.Int64, strict=False)
        cond = (pref < 1) | (pref > 47)
        add(cond if scope is None else cond & scope, "prefecture-range", name,
            pl.format(f"{name} '{{}}': prefecture {{}} is not 01-47", _col(name),
                      _col(name).str.slice(0, 2)))  # fmt: skip

    add(rec & ~_p("sex").is_in([1, 2]), "sex", "sex",
        pl.format("sex '{}': must be 1 (male) or 2 (female)", _col("sex")))  # fmt: skip
    add(rec & ~kind.is_in([1, 2]), "resident-kind", "resident_kind",
        pl.format("resident_kind '{}': must be 1 (Japanese) or 2 (foreign)",
                  _col("resident_kind")))  # fmt: skip
    for name in ("surname_kana", "given_name_kana", "former_surname_kana"):
        pattern = pl.when(kind == 2).then(pl.lit(KANA_FOREIGN)).otherwise(pl.lit(KANA_JAPANESE))
        cond = rec & _col(name).is_not_null() & ~_col(name).str.contains(pattern)
        add(cond, "kana", name,
            pl.format(f"{name} '{{}}': must be full-width katakana (ァ-ヶ, ー; ・ for foreign "
                      "names)", _col(name)))  # fmt: skip
    add(rec & (_col("former_surname").is_null() != _col("former_surname_kana").is_null()),
        "former-surname-pair", "former_surname",
        "former_surname and former_surname_kana: both or neither")  # fmt: skip
    add(rec & _col("alias").is_not_null() & (kind == 1), "alias-japanese", "alias",
        "alias: only for foreign residents (resident_kind 2)")  # fmt: skip
    add(rec & _col("former_surname").is_not_null() & (kind == 2), "former-surname-foreign",
        "former_surname", "former_surname: only for Japanese residents (resident_kind 1)")  # fmt: skip
    add(rec & (_p("birth_date") > _p("change_date")), "birth-after-change", "birth_date",
        pl.format("birth_date {} is after change_date {}", _col("birth_date"),
                  _col("change_date")))  # fmt: skip
    return rules


def first_broken_rule(frame: pl.DataFrame) -> pl.DataFrame:
    """Add `rule`, `reject_column`, `message` of the first rule each row breaks (null if none).

    The conditions are cheap boolean columns folded into the index of the first that holds; the
    messages are formatted only for the rows that break a rule.
    """
    rules = _rules()
    first = pl.min_horizontal(
        [pl.when(cond).then(pl.lit(i, pl.Int16)) for i, (cond, _) in enumerate(rules)]
    )
    index = frame.select(first).to_series()
    failing = index.is_not_null()
    if not failing.any():
        return frame.with_columns(
            rule=pl.lit(None, pl.String),
            reject_column=pl.lit(None, pl.String),
            message=pl.lit(None, pl.String),
        )
    failure = None
    for i, (_, fail) in enumerate(rules):
        hit = pl.col("_rule_index") == i
        failure = pl.when(hit).then(fail) if failure is None else failure.when(hit).then(fail)
    assert failure is not None
    bad = (
        frame.with_columns(_rule_index=index)
        .filter(failing)
        .select(pl.col("_position"), failure.alias("_failure"))
        .unnest("_failure")
    )
    return frame.join(bad, on="_position", how="left", maintain_order="left")


@functools.cache
def typed_columns() -> list[pl.Expr]:
    """The typed journal columns parsed from the text form (X1 rows keep only their own fields)."""
    rec = pl.col("reason") != "X1"

    def keep(e: pl.Expr, name: str) -> pl.Expr:
        return pl.when(rec).then(e).alias(name)

    mc = pl.col("municipality_code")
    return [
        _p("seq").alias("seq"),
        _p("change_date").alias("change_date"),
        *[keep(pl.col(c), c) for c in ("surname", "given_name", "surname_kana", "given_name_kana",
                                       "former_surname", "former_surname_kana", "alias",
                                       "address")],  # fmt: skip
        keep(_p("birth_date"), "birth_date"),
        keep(_p("sex").cast(pl.Int8, strict=False), "sex"),
        keep(_p("resident_kind").cast(pl.Int8, strict=False), "resident_kind"),
        keep(_p("protected").fill_null(False), "protected"),
        keep(mc.str.slice(0, 2), "prefecture_code"),
        pl.when(pl.col("reason") == "M5").then(pl.col("previous_resident_code"))
        .alias("previous_resident_code"),
        pl.when(~rec).then(pl.col("cancels_municipality_code")).alias("cancels_municipality_code"),
        pl.when(~rec).then(_p("cancels_seq")).alias("cancels_seq"),
        _p("notified_at").alias("notified_at"),
    ]


def validate_rows(text: pl.DataFrame) -> pl.DataFrame:
    """Typed rows plus `rule`, `reject_column`, `message` of the first stateless rule broken."""
    # One chunk: polars 2.1 panics formatting messages over filtered multi-chunk string views.
    frame = _with_parsed(text.rechunk().with_row_index("_position"))
    helpers = [c for c in frame.columns if c.startswith(("_p_", "_i_", "_x_", "_typed_"))]
    return (
        first_broken_rule(frame).with_columns(typed_columns()).drop("_position", *helpers)
    )
