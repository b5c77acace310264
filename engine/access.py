"""Who may receive what (SPEC §5): the agency/affair registry, authorisation, and the rules a
grant applies to every output row (prefecture scope, protected persons' address withheld).

The registry is a TOML file loaded into the Delta table `registry` (each load replaces it; the
Delta log keeps every earlier registry). `authorize` either returns a `Grant` or records the
refusal in `requests` (see `engine/requests.py`) and raises `AccessRefused` (exit 3).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tomllib
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from engine.codes import is_prefecture_code
from engine.dates import JST
from engine.errors import AccessRefused, InputRejected, UsageError
from engine.schema import RECORD_COLUMNS
from engine.store import Store

if TYPE_CHECKING:
    import polars as pl

Function = Literal["lookup", "changes", "extract", "push", "stats"]
FUNCTIONS: tuple[str, ...] = ("lookup", "changes", "extract", "push", "stats")
# Columns an affair may name: the record of SPEC §1. `protected` is in every output anyway.
PROVIDABLE = tuple(c for c in RECORD_COLUMNS if c != "protected")
# SPEC §1: withheld from protected persons unless the affair has protected_access.
ADDRESS_COLUMNS = ("municipality_code", "prefecture_code", "address")

REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),  # agency | affair
        pa.field("code", pa.string()),
        pa.field("name", pa.string()),
        pa.field("scope", pa.string()),  # agency
        pa.field("prefecture", pa.string()),  # agency
        pa.field("basis", pa.string()),  # affair
        pa.field("agencies", pa.list_(pa.string())),  # affair
        pa.field("functions", pa.list_(pa.string())),  # affair
        pa.field("columns", pa.list_(pa.string())),  # affair
        pa.field("protected_access", pa.bool_()),  # affair
        pa.field("source_sha256", pa.string()),
        pa.field("loaded_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class Agency:
    code: str
    name: str
    scope: Literal["national", "prefecture"]
    prefecture: str  # "13" for a prefecture-scoped agency, "" otherwise


@dataclass(frozen=True)
class Affair:
    code: str
    name: str
    basis: str
    agencies: tuple[str, ...]
    functions: tuple[str, ...]
    columns: tuple[str, ...]
    protected_access: bool


@dataclass(frozen=True)
class Registry:
    agencies: dict[str, Agency] = field(default_factory=dict)
    affairs: dict[str, Affair] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "agency": [asdict(a) for a in self.agencies.values()],
            "affair": [
                {**asdict(a), "agencies": list(a.agencies), "functions": list(a.functions),
                 "columns": list(a.columns)}
                for a in self.affairs.values()
            ],
        }


@dataclass(frozen=True)
class Grant:
    """An authorised request: what it may see, and the id its records and outputs carry."""

    request_id: str
    requested_at: dt.datetime
    agency: Agency
    affair: Affair
    function: str
    columns: tuple[str, ...]  # provided record columns in §1 order, without `protected`

    @property
    def prefecture(self) -> str | None:
        """The only prefecture whose residents this grant may see (None: national)."""
        return self.agency.prefecture if self.agency.scope == "prefecture" else None

    @property
    def protected_access(self) -> bool:
        return self.affair.protected_access

    @property
    def output_columns(self) -> list[str]:
        return [*self.columns, "protected"]


# -- the registry file ---------------------------------------------------------------------------
def _text(entry: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputRejected(f"{where}: `{key}` must be a non-empty string")
    return value


def _list(entry: dict[str, Any], key: str, where: str, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputRejected(f"{where}: `{key}` must be a list of strings")
    if allowed is not None:
        for v in value:
            if v not in allowed:
                raise InputRejected(f"{where}: `{key}` has '{v}', not one of {', '.join(allowed)}")
    return tuple(dict.fromkeys(value))


def parse_registry(path: str | Path) -> Registry:
    """Read and check a registry TOML file (SPEC §5); InputRejected names the entry and field."""
    p = Path(path)
    if not p.is_file():
        raise UsageError.missing_file(p)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputRejected.unreadable(p, f"not a TOML file ({e})") from None
    agencies: dict[str, Agency] = {}
    for i, entry in enumerate(doc.get("agency", []), 1):
        where = f"{p}: agency {i}"
        code = _text(entry, "code", where)
        if code in agencies:
            raise InputRejected(f"{where}: agency code '{code}' is not unique")
        scope = _text(entry, "scope", where)
        prefecture = _text(entry, "prefecture", where, required=False)
        if scope == "national":
            prefecture = ""
        elif scope == "prefecture":
            if not is_prefecture_code(prefecture):
                raise InputRejected(f"{where}: prefecture '{prefecture}' must be 01–47")
        else:
            raise InputRejected(f"{where}: scope '{scope}' must be national or prefecture")
        agencies[code] = Agency(code, _text(entry, "name", where), scope, prefecture)  # type: ignore[arg-type]
    affairs: dict[str, Affair] = {}
    for i, entry in enumerate(doc.get("affair", []), 1):
        where = f"{p}: affair {i}"
        code = _text(entry, "code", where)
        if code in affairs:
            raise InputRejected(f"{where}: affair code '{code}' is not unique")
        members = _list(entry, "agencies", where, tuple(agencies))
        access = entry.get("protected_access", False)
        if not isinstance(access, bool):
            raise InputRejected(f"{where}: `protected_access` must be true or false")
        columns = _list(entry, "columns", where, (*PROVIDABLE, "protected"))
        affairs[code] = Affair(
            code=code, name=_text(entry, "name", where),
            basis=_text(entry, "basis", where, required=False), agencies=members,
            functions=_list(entry, "functions", where, FUNCTIONS),
            columns=tuple(c for c in PROVIDABLE if c in columns), protected_access=access,
        )  # fmt: skip
    return Registry(agencies, affairs)


def load_registry(store: Store, path: str | Path, *, now: dt.datetime) -> Registry:
    """Replace the store's registry with the file's (the Delta log keeps the earlier ones)."""
    from deltalake import write_deltalake

    registry = parse_registry(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    rows: list[dict[str, Any]] = []
    for a in registry.agencies.values():
        rows.append({"kind": "agency", "code": a.code, "name": a.name, "scope": a.scope,
                     "prefecture": a.prefecture})  # fmt: skip
    for f in registry.affairs.values():
        rows.append({"kind": "affair", "code": f.code, "name": f.name, "basis": f.basis,
                     "agencies": list(f.agencies), "functions": list(f.functions),
                     "columns": list(f.columns), "protected_access": f.protected_access})  # fmt: skip
    for r in rows:
        r.update(source_sha256=digest, loaded_at=now)
    table = pa.Table.from_pylist(rows, schema=REGISTRY_SCHEMA)
    store.path.mkdir(parents=True, exist_ok=True)
    write_deltalake(str(store.table_path("registry")), table, mode="overwrite")
    return registry


def read_registry(store: Store) -> Registry:
    """The loaded registry (empty when none was loaded: every request is then refused)."""
    root = store.table_path("registry")
    if not (root / "_delta_log").is_dir():
        return Registry()
    import polars as pl

    # through Polars: pyarrow's dataset module costs ~0.25 s to import, on every request
    rows = pl.read_delta(str(root)).to_dicts()
    agencies = {
        r["code"]: Agency(r["code"], r["name"], r["scope"], r["prefecture"] or "")
        for r in rows
        if r["kind"] == "agency"
    }
    affairs = {
        r["code"]: Affair(r["code"], r["name"], r["basis"] or "", tuple(r["agencies"] or ()),
                          tuple(r["functions"] or ()), tuple(r["columns"] or ()),
                          bool(r["protected_access"]))
        for r in rows
        if r["kind"] == "affair"
    }
    return Registry(agencies, affairs)


# -- authorisation -----------------------------------------------------------------------------
def new_request_id(now: dt.datetime) -> str:
    """Sortable and unique: Japan-time stamp to the microsecond plus 8 random hex digits."""
    return f"{now.astimezone(JST):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def refusal_reason(
    registry: Registry, *, agency: str, affair: str, function: str, columns: list[str] | None
) -> str | None:
    """Why SPEC §5 refuses the request, or None when it is allowed."""
    if agency not in registry.agencies:
        return f"--agency '{agency}': unknown agency"
    if affair not in registry.affairs:
        return f"--affair '{affair}': unknown affair"
    rules = registry.affairs[affair]
    if agency not in rules.agencies:
        return f"--agency '{agency}': not an agency of affair '{affair}'"
    if function not in rules.functions:
        return f"--affair '{affair}': does not allow the function '{function}'"
    for c in columns or []:
        if c != "protected" and c not in rules.columns:
            return f"--columns '{c}': not among the columns of affair '{affair}'"
    return None


def authorize(
    store: Store,
    *,
    agency: str,
    affair: str,
    function: str,
    columns: list[str] | None,
    parameters: dict[str, Any],
    now: dt.datetime,
) -> Grant:
    """A grant for the request, or AccessRefused (exit 3) after recording the refusal."""
    from engine.requests import record_request

    registry = read_registry(store)
    request_id = new_request_id(now)
    reason = refusal_reason(registry, agency=agency, affair=affair, function=function,
                            columns=columns)  # fmt: skip
    if reason is not None:
        record_request(
            store, request_id=request_id, requested_at=now, agency=agency, affair=affair,
            function=function, parameters=parameters, columns=columns or [], status="refused",
            refused_reason=reason,
        )  # fmt: skip
        raise AccessRefused(f"refused: {reason}")
    rules = registry.affairs[affair]
    chosen = rules.columns if columns is None else tuple(c for c in rules.columns if c in columns)
    return Grant(request_id, now, registry.agencies[agency], rules, function, chosen)


def parameters_json(parameters: dict[str, Any]) -> str:
    return json.dumps(parameters, ensure_ascii=False, sort_keys=True, default=str)


# -- what a grant lets through -------------------------------------------------------------------
def in_scope(grant: Grant) -> pl.Expr:
    """True for rows the grant may see: everyone, or the agency's prefecture only (SPEC §5)."""
    import polars as pl

    if grant.prefecture is None:
        return pl.lit(True)
    return pl.col("prefecture_code").fill_null("") == grant.prefecture


def withheld(grant: Grant) -> pl.Expr:
    """True for rows whose address columns are withheld (protected, no protected_access)."""
    import polars as pl

    if grant.protected_access:
        return pl.lit(False)
    return pl.col("protected").fill_null(False)


def withhold(frame: pl.LazyFrame, grant: Grant, extra: tuple[str, ...] = ()) -> pl.LazyFrame:
    """Null the address columns (and `extra`, e.g. previous_address) of protected persons."""
    import polars as pl

    hide = withheld(grant)
    names = [c for c in (*ADDRESS_COLUMNS, *extra) if c in frame.collect_schema().names()]
    return frame.with_columns(
        [pl.when(hide).then(None).otherwise(pl.col(c)).alias(c) for c in names]
    )


def provided_columns(grant: Grant, *, enum: bool = False) -> pl.Expr:
    """Per row, the record columns actually handed over (for the provision record); `enum`
    gives them as a two-value Enum (no string per row: national extracts)."""
    import polars as pl

    full = ",".join(grant.output_columns)
    reduced = ",".join(c for c in grant.output_columns if c not in ADDRESS_COLUMNS)
    dtype = pl.Enum(list(dict.fromkeys([full, reduced]))) if enum else pl.String
    return pl.when(withheld(grant)).then(pl.lit(reduced, dtype)).otherwise(pl.lit(full, dtype))
