"""Issuance (採番, SPEC §2.4): the resident-code pool, draws by municipalities, My Numbers.

A resident code moves pooled → assigned (to a municipality) → issued (to a person, by ingest) →
retired. The pool is the `code_pool` table, append-only like the journal: every change is an
event row (`pooled`, `assigned`; `derived` for a My Number derived from a resident code), and a
code's state is its latest event. `codes` (derived from the journal) stays the registry of codes
issued to persons; a new code is never equal to any code in either table, of its kind (resident
codes and My Numbers are separate spaces).

A My Number is derived from a resident code by a keyed, irreversible mapping: HMAC-SHA256 of
the resident code and a counter, read as an integer modulo 10**11, plus the check digit of
SPEC §2.1; on a collision with any My Number issued or derived the counter moves on. The key is
an argument (the CLI reads `--key-file` or `JUKI_MYNUMBER_KEY`); it is never stored.

Every write is one Delta commit under the store's writer lock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from engine.codes import is_valid, with_check_digit
from engine.errors import InputRejected, UsageError
from engine.kernels.unique import member_mask
from engine.store import Store

RESIDENT_CODE, MY_NUMBER = 1, 2  # `kind`, as in the `codes` registry
POOL_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.int8()),
        pa.field("code", pa.int64()),
        pa.field("event", pa.string()),  # pooled | assigned | derived
        pa.field("municipality_code", pa.string()),  # assigned: to whom
        pa.field("resident_code", pa.int64()),  # derived: from which resident code
        pa.field("at", pa.timestamp("us", tz="UTC")),
    ]
)
ALERT_BELOW = 1_000
Clock = Callable[[], dt.datetime]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class PoolSummary:
    """`juki codes issue --kind resident-code`: codes added, and the pool's unassigned total."""

    issued: int
    unassigned: int
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {"kind": "resident-code", **asdict(self)}


@dataclass(frozen=True)
class DrawSummary:
    """`juki codes draw`: codes assigned, and the municipality's assigned-but-unused codes."""

    municipality_code: str
    drawn: int
    unused: int
    alert_below: int
    codes: tuple[str, ...]

    @property
    def alert(self) -> bool:
        return self.unused < self.alert_below

    def to_json(self) -> dict[str, object]:
        return {"municipality_code": self.municipality_code, "drawn": self.drawn,
                "unused": self.unused, "alert_below": self.alert_below, "alert": self.alert}  # fmt: skip


# -- reading the tables ------------------------------------------------------------------------
def pool_events(store: Store) -> pl.LazyFrame:
    """Every event of the pool (empty when no code was ever pooled)."""
    root = store.table_path("code_pool")
    if not (root / "_delta_log").is_dir():
        return pl.LazyFrame(schema=pl.from_arrow(POOL_SCHEMA.empty_table()).schema)  # type: ignore[union-attr]
    return pl.scan_delta(str(root))


def issued_codes(store: Store, kind: int) -> np.ndarray:
    """Every code of this kind ever issued to a person (the `codes` registry), as int64."""
    if not store.exists():
        return np.zeros(0, np.int64)
    return (
        pl.scan_delta(str(store.table_path("codes")))
        .filter(pl.col("kind") == kind)
        .select("code")
        .collect()["code"]
        .to_numpy()
    )


def _pooled(store: Store, kind: int) -> np.ndarray:
    """Every code of this kind the pool ever held (pooled, assigned or derived)."""
    return pool_events(store).filter(pl.col("kind") == kind).select("code").collect()["code"].to_numpy()


def _append(store: Store, kind: int, event: str, codes: np.ndarray, *, at: dt.datetime,
            municipality_code: str | None = None,
            resident_codes: np.ndarray | None = None) -> None:  # fmt: skip
    """One commit of events."""
    from deltalake import write_deltalake

    n = len(codes)
    table = pa.table({
        "kind": pa.array(np.full(n, kind, np.int8)),
        "code": pa.array(np.asarray(codes, np.int64)),
        "event": pa.array([event] * n, pa.string()),
        "municipality_code": pa.array([municipality_code] * n, pa.string()),
        "resident_code": pa.array(resident_codes if resident_codes is not None else [None] * n,
                                  pa.int64()),
        "at": pa.array([at] * n, POOL_SCHEMA.field("at").type),
    })  # fmt: skip
    write_deltalake(str(store.table_path("code_pool")), table, mode="append")


def _unassigned(store: Store, issued: np.ndarray | None = None) -> np.ndarray:
    """Pooled resident codes not yet assigned; with `issued`, none of those either (the pool is
    advisory: ingest accepts any valid code never issued)."""
    events = pool_events(store).filter(pl.col("kind") == RESIDENT_CODE)
    pooled = events.filter(pl.col("event") == "pooled").select("code")
    assigned = events.filter(pl.col("event") == "assigned").select("code")
    free = pooled.join(assigned, on="code", how="anti").collect()["code"].to_numpy()
    return free if issued is None else free[~member_mask(free, issued)]


# -- resident codes ----------------------------------------------------------------------------
def new_resident_codes(count: int, taken: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct random resident codes (10 random digits + check digit, SPEC §2.2) of
    which none is in `taken`."""
    out = np.zeros(0, np.int64)
    while len(out) < count:
        want = count - len(out)
        bodies = rng.integers(0, 10**10, size=want + want // 8 + 16, dtype=np.int64)
        fresh = np.unique(with_check_digit(bodies, "resident_code"))
        fresh = fresh[~member_mask(fresh, taken)]
        fresh = fresh[~member_mask(fresh, out)] if len(out) else fresh
        out = np.concatenate([out, rng.permutation(fresh)[:want]])
    return out


def issue_resident_codes(store: Store, *, count: int, rng: np.random.Generator | None = None,
                         clock: Clock = _now) -> PoolSummary:  # fmt: skip
    """Add `count` new resident codes to the pool (SPEC §2.4), one commit."""
    if count < 1:
        raise UsageError(f"--count {count}: must be 1 or more")
    started = time.perf_counter()
    rng = rng or np.random.default_rng(secrets.randbits(128))
    with store.writer("juki codes issue --kind resident-code"):
        store.ensure_tables()
        taken = np.concatenate([issued_codes(store, RESIDENT_CODE), _pooled(store, RESIDENT_CODE)])
        codes = new_resident_codes(count, taken, rng)
        _append(store, RESIDENT_CODE, "pooled", codes, at=clock())
        unassigned = len(_unassigned(store))
    return PoolSummary(issued=count, unassigned=unassigned, seconds=time.perf_counter() - started)


def draw_resident_codes(store: Store, *, municipality_code: str, count: int,
                        alert_below: int = ALERT_BELOW, rng: np.random.Generator | None = None,
                        clock: Clock = _now) -> DrawSummary:  # fmt: skip
    """Assign `count` pooled resident codes to a municipality at random, one commit; report how
    many codes assigned to it are still unused (not issued to anyone)."""
    if not is_valid(municipality_code, "municipality_code"):
        raise UsageError(f"--municipality '{municipality_code}': not a local government code "
                         "(6 digits, prefecture 01-47, check digit)")  # fmt: skip
    if count < 1:
        raise UsageError(f"--count {count}: must be 1 or more")
    rng = rng or np.random.default_rng(secrets.randbits(128))
    with store.writer("juki codes draw"):
        issued = issued_codes(store, RESIDENT_CODE)
        free = _unassigned(store, issued)
        if len(free) < count:
            raise UsageError(f"--count {count}: the pool holds {len(free)} unassigned resident "
                             "codes; add some with `juki codes issue --kind resident-code`")  # fmt: skip
        chosen = free[rng.choice(len(free), size=count, replace=False)]
        _append(store, RESIDENT_CODE, "assigned", chosen, at=clock(),
                municipality_code=municipality_code)
        unused = unused_assigned(store, municipality_code, issued)
    return DrawSummary(municipality_code=municipality_code, drawn=count, unused=unused,
                       alert_below=alert_below,
                       codes=tuple(f"{int(c):011d}" for c in chosen))  # fmt: skip


def unused_assigned(store: Store, municipality_code: str, issued: np.ndarray | None = None) -> int:
    """Resident codes assigned to the municipality and not issued to any person yet."""
    assigned = (
        pool_events(store)
        .filter((pl.col("event") == "assigned") & (pl.col("municipality_code") == municipality_code))
        .select("code")
        .collect()["code"]
        .to_numpy()
    )
    if issued is None:
        issued = issued_codes(store, RESIDENT_CODE)
    return int((~member_mask(assigned, issued)).sum())


# -- My Numbers --------------------------------------------------------------------------------
def my_number_body(key: bytes, resident_code: int, counter: int) -> int:
    """The keyed, irreversible step: HMAC-SHA256(key, "<resident code>:<counter>") mod 10**11."""
    digest = hmac.new(key, f"{resident_code:011d}:{counter}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:16], "big") % 10**11


def derive(resident_codes: np.ndarray, taken: np.ndarray, key: bytes) -> np.ndarray:
    """One My Number per resident code (distinct inputs), none in `taken` nor equal to another."""
    counters = np.zeros(len(resident_codes), np.int64)
    out = np.full(len(resident_codes), -1, np.int64)
    todo = np.arange(len(resident_codes))
    while len(todo):
        bodies = np.array([my_number_body(key, int(resident_codes[i]), int(counters[i]))
                           for i in todo], np.int64)  # fmt: skip
        candidates = with_check_digit(bodies, "my_number")
        kept = out[out >= 0]
        clash = member_mask(candidates, taken) | member_mask(candidates, kept)
        _, first = np.unique(candidates, return_index=True)
        repeated = np.ones(len(candidates), np.bool_)
        repeated[first] = False  # two resident codes drew the same number: the first keeps it
        ok = ~(clash | repeated)
        out[todo[ok]] = candidates[ok]
        counters[todo[~ok]] += 1
        todo = todo[~ok]
    return out


def derive_my_numbers(store: Store, resident_codes: Sequence[str], *, key: bytes,
                      clock: Clock = _now) -> pl.DataFrame:  # fmt: skip
    """`resident_code`, `my_number` for each given resident code (in order), recorded as derived.

    A resident code derived before keeps its My Number while that number is not issued yet (a
    re-run gives the same file); once issued, a new one is derived (never issued twice).
    """
    if not key:
        raise UsageError("--key-file or JUKI_MYNUMBER_KEY: the My Number key is empty")
    for i, code in enumerate(resident_codes, start=1):
        if code is None or not is_valid(code, "resident_code"):
            raise InputRejected(f"row {i}: resident_code '{code}': not a valid resident code "
                                "(11 digits, check digit)")  # fmt: skip
    wanted = pl.DataFrame({"resident_code": list(resident_codes)}, schema={"resident_code": pl.String})
    keys = wanted.select(rc=pl.col("resident_code").cast(pl.Int64)).unique(maintain_order=True)
    with store.writer("juki codes issue --kind my-number"):
        store.ensure_tables()
        issued = issued_codes(store, MY_NUMBER)
        earlier = (
            pool_events(store)
            .filter((pl.col("kind") == MY_NUMBER) & (pl.col("event") == "derived"))
            .select(rc="resident_code", mn="code")
            .unique("rc", keep="last", maintain_order=True)
            .collect()
        )
        earlier = earlier.filter(pl.Series(~member_mask(earlier["mn"].to_numpy(), issued)))
        known = keys.join(earlier, on="rc", how="left")
        new = known.filter(pl.col("mn").is_null())["rc"].to_numpy()
        taken = np.concatenate([issued, _pooled(store, MY_NUMBER)])
        derived = pl.DataFrame({"rc": new, "mn_new": derive(new, taken, key)},
                               schema={"rc": pl.Int64, "mn_new": pl.Int64})  # fmt: skip
        if derived.height:
            _append(store, MY_NUMBER, "derived", derived["mn_new"].to_numpy(), at=clock(),
                    resident_codes=derived["rc"].to_numpy())
        mapping = known.join(derived, on="rc", how="left").select(
            "rc", mn=pl.coalesce("mn", "mn_new")
        )
    return (
        wanted.with_columns(rc=pl.col("resident_code").cast(pl.Int64))
        .join(mapping, on="rc", how="left", maintain_order="left")
        .select("resident_code", my_number=pl.col("mn").cast(pl.String).str.zfill(12))
    )
