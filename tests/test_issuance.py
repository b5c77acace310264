"""Issuance (採番, SPEC §2.4): pooled resident codes, draws, My Numbers derived with a key; a code
ever issued is never issued again; writes are atomic under the writer lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from builders import CHIYODA, Municipality, my_number, person, resident_code, row, write_csv
from stdnum.jp import in_ as stdnum_my_number

from engine.codes import is_valid, with_check_digit
from engine.errors import InputRejected, UsageError
from engine.issuance import (
    derive_my_numbers,
    draw_resident_codes,
    issue_resident_codes,
    issued_codes,
    my_number_body,
    new_resident_codes,
    pool_events,
    unused_assigned,
)
from engine.store import Store
from loaders.ingest import ingest_files

_BIN = Path(sys.executable).parent / "juki"
JUKI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "engine.cli"]
KEY = b"a key that is never stored"


def run_juki(*args: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("JUKI_STORE", "JUKI_MYNUMBER_KEY")}
    return subprocess.run([*JUKI, *map(str, args)], check=False, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Ten registered persons in Chiyoda."""
    chiyoda = Municipality(CHIYODA)
    rows = [row(chiyoda, "A4", "2024-01-01", person(i)) for i in range(10)]
    s = Store(tmp_path / "store")
    assert ingest_files(s, [write_csv(tmp_path / "a4.csv", rows)]).total("applied") == 10
    s.chiyoda = chiyoda  # type: ignore[attr-defined]
    return s


def register(store: Store, tmp_path: Path, name: str, **codes: str) -> None:
    """An A1 birth carrying the given codes: ingest records them as issued."""
    rec = person(900, **codes)
    f = write_csv(tmp_path / f"{name}.csv", [row(store.chiyoda, "A1", "2024-02-01", rec)])  # type: ignore[attr-defined]
    assert ingest_files(store, [f]).total("applied") == 1


# -- resident codes: the pool ------------------------------------------------------------------
def test_pooled_codes_are_new_valid_and_distinct(store: Store) -> None:
    first = issue_resident_codes(store, count=3000, rng=np.random.default_rng(1))
    second = issue_resident_codes(store, count=2000, rng=np.random.default_rng(1))  # same draws
    assert (first.issued, second.issued, second.unassigned) == (3000, 2000, 5000)
    pooled = pool_events(store).collect()
    codes = pooled["code"].to_numpy()
    assert len(np.unique(codes)) == 5000
    assert set(pooled["event"]) == {"pooled"}
    assert all(is_valid(f"{c:011d}", "resident_code") for c in codes)
    assert not np.isin(codes, issued_codes(store, 1)).any()


class ReplayRng:
    """A generator that first draws bodies already taken and repeated, then fresh ones."""

    def __init__(self, first: np.ndarray) -> None:
        self.calls = [first]
        self.fresh = np.random.default_rng(9)

    def integers(self, low: int, high: int, size: int, dtype: Any = None) -> np.ndarray:
        if self.calls:
            return self.calls.pop()
        return self.fresh.integers(low, high, size=size, dtype=dtype)

    def permutation(self, a: np.ndarray) -> np.ndarray:
        return self.fresh.permutation(a)


def test_a_drawn_code_equal_to_a_taken_one_is_redrawn() -> None:
    taken_bodies = np.arange(100, 200, dtype=np.int64)
    taken = with_check_digit(taken_bodies, "resident_code")
    rng = ReplayRng(np.concatenate([taken_bodies, [7, 7, 7]]))
    codes = new_resident_codes(50, taken, rng)  # type: ignore[arg-type]
    assert len(codes) == len(set(codes.tolist())) == 50
    assert not np.isin(codes, taken).any()
    assert (codes == with_check_digit(np.array([7]), "resident_code")[0]).sum() == 1


def test_draws_assign_pooled_codes_once_and_alert_when_few_are_left(store: Store,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    issue_resident_codes(store, count=100, rng=np.random.default_rng(2))
    a = draw_resident_codes(store, municipality_code=CHIYODA, count=30, alert_below=25,
                            rng=np.random.default_rng(3))  # fmt: skip
    b = draw_resident_codes(store, municipality_code="131130", count=70, alert_below=25)
    assert not a.alert and (a.drawn, a.unused) == (30, 30)
    assert not set(a.codes) & set(b.codes) and len(set(a.codes)) == 30
    with pytest.raises(UsageError, match="--count 1: the pool holds 0 unassigned"):
        draw_resident_codes(store, municipality_code=CHIYODA, count=1)
    for i, code in enumerate(a.codes[:6]):  # Chiyoda issues six of its codes at births
        register(store, tmp_path, f"birth{i}", resident_code=code, my_number=my_number(500 + i))
    assert unused_assigned(store, CHIYODA) == 24
    issue_resident_codes(store, count=1)
    again = draw_resident_codes(store, municipality_code=CHIYODA, count=1, alert_below=26)
    assert (again.unused, again.alert) == (25, True)
    assert again.to_json() == {"municipality_code": CHIYODA, "drawn": 1, "unused": 25,
                               "alert_below": 26, "alert": True}  # fmt: skip


def test_a_draw_names_a_real_municipality(store: Store) -> None:
    with pytest.raises(UsageError, match="--municipality '131017'"):
        draw_resident_codes(store, municipality_code="131017", count=1)


# -- My Numbers ----------------------------------------------------------------------------------
def test_my_numbers_are_keyed_valid_and_stable_until_issued(store: Store, tmp_path: Path) -> None:
    codes = [resident_code(n) for n in (100, 101, 102)]
    first = derive_my_numbers(store, [*codes, codes[0]], key=KEY)
    assert first["resident_code"].to_list() == [*codes, codes[0]]
    numbers = first["my_number"].to_list()
    assert numbers[0] == numbers[3] and len(set(numbers[:3])) == 3
    assert all(stdnum_my_number.is_valid(n) for n in numbers)
    assert derive_my_numbers(store, codes, key=KEY)["my_number"].to_list() == numbers[:3]
    rc = resident_code(103)
    other = derive_my_numbers(store, [rc], key=b"another key")["my_number"][0]

    def keyed(key: bytes) -> str:
        return f"{int(with_check_digit(np.array([my_number_body(key, int(rc), 0)]), 'my_number')[0]):012d}"

    assert other == keyed(b"another key") != keyed(KEY)
    # Once a derived number is issued (a birth carries it), the code gets a new one.
    register(store, tmp_path, "born", resident_code=codes[0], my_number=numbers[0])
    again = derive_my_numbers(store, [codes[0]], key=KEY)["my_number"][0]
    assert again != numbers[0] and is_valid(again, "my_number")


def test_a_my_number_equal_to_an_issued_one_is_redrawn(store: Store, tmp_path: Path) -> None:
    rc = resident_code(200)
    natural = int(with_check_digit(np.array([my_number_body(KEY, int(rc), 0)]), "my_number")[0])
    register(store, tmp_path, "taken", resident_code=resident_code(201),
             my_number=f"{natural:012d}")  # fmt: skip
    derived = derive_my_numbers(store, [rc], key=KEY)["my_number"][0]
    expected = int(with_check_digit(np.array([my_number_body(KEY, int(rc), 1)]), "my_number")[0])
    assert derived == f"{expected:012d}"


def test_the_key_is_never_stored(store: Store) -> None:
    derive_my_numbers(store, [resident_code(300)], key=KEY)
    for f in store.path.rglob("*"):
        if f.is_file():
            assert KEY not in f.read_bytes(), f


def test_a_bad_resident_code_rejects_the_request(store: Store) -> None:
    with pytest.raises(InputRejected, match="row 2: resident_code '12345678901'"):
        derive_my_numbers(store, [resident_code(1), "12345678901"], key=KEY)
    assert pool_events(store).collect().is_empty()


# -- the commands, in real processes -------------------------------------------------------------
def test_codes_commands_exit_codes_and_json(store: Store, tmp_path: Path) -> None:
    s = store.path
    result = run_juki("codes", "issue", "--kind", "resident-code", "--count", "50", "--json",
                      "--store", s)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["issued"] == 50
    result = run_juki("codes", "draw", "--municipality", CHIYODA, "--count", "20", "--json",
                      "--out", tmp_path / "drawn.csv", "--store", s)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["alert"] is True  # 20 < 1000 by default
    assert f"alert: municipality {CHIYODA} has 20 assigned-but-unused" in result.stderr
    assert pl.read_csv(tmp_path / "drawn.csv", infer_schema=False).height == 20

    (tmp_path / "rc.csv").write_text(f"resident_code\n{resident_code(400)}\n{resident_code(401)}\n")
    out = tmp_path / "mn.parquet"
    args = ["codes", "issue", "--kind", "my-number", "--resident-codes", tmp_path / "rc.csv",
            "--out", out, "--store", s]  # fmt: skip
    result = run_juki(*args)
    assert result.returncode == 2 and "JUKI_MYNUMBER_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_juki(*args, env={"JUKI_MYNUMBER_KEY": KEY.decode()})
    assert result.returncode == 0, result.stderr
    by_env = pl.read_parquet(out)
    assert by_env.columns == ["resident_code", "my_number"] and by_env.height == 2
    (tmp_path / "key").write_bytes(KEY + b"\n")
    result = run_juki(*args, "--key-file", tmp_path / "key", "--json")
    assert result.returncode == 0, result.stderr
    assert pl.read_parquet(out).equals(by_env)  # the same key, from a file
    assert json.loads(result.stdout) == {"kind": "my-number", "out": str(out), "rows": 2,
                                         "resident_codes": 2}  # fmt: skip

    (tmp_path / "bad.csv").write_text("resident_code\n12345\n")
    result = run_juki("codes", "issue", "--kind", "my-number", "--resident-codes",
                      tmp_path / "bad.csv", "--out", out, "--store", s,
                      env={"JUKI_MYNUMBER_KEY": "k"})  # fmt: skip
    assert result.returncode == 4
    assert result.stderr.strip() == (f"{tmp_path / 'bad.csv'}: row 1: resident_code '12345': "
                                     "not a valid resident code (11 digits, check digit)")  # fmt: skip


def test_issuance_waits_for_no_one_when_another_writer_holds_the_store(store: Store) -> None:
    with store.writer("test holds the store"):
        result = run_juki("codes", "issue", "--kind", "resident-code", "--count", "5",
                          "--store", store.path)  # fmt: skip
    assert result.returncode == 5
    assert "test holds the store" in result.stderr
    assert pool_events(store).collect().is_empty()


def test_a_missing_or_columnless_resident_code_file_is_refused(tmp_path: Path) -> None:
    from loaders.issuance import read_resident_codes

    with pytest.raises(UsageError, match="no such file"):
        read_resident_codes(tmp_path / "none.csv")
    (tmp_path / "x.csv").write_text("my_number\n123\n")
    with pytest.raises(InputRejected, match="missing required column: resident_code"):
        read_resident_codes(tmp_path / "x.csv")
