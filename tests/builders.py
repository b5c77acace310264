"""Builders for notification rows written inline in tests, so a test reads like a story."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from engine.codes import with_check_digit
from engine.schema import NOTIFICATION_COLUMNS

_counter = itertools.count(1)


def resident_code(n: int) -> str:
    return f"{int(with_check_digit(np.array([n + 1_000_000_000]), 'resident_code')[0]):011d}"


def my_number(n: int) -> str:
    return f"{int(with_check_digit(np.array([n + 10_000_000_000]), 'my_number')[0]):012d}"


def municipality(body: str) -> str:
    """Full 6-digit local government code from its 5-digit body (e.g. '13101' → '131016')."""
    return f"{int(with_check_digit(np.array([int(body)]), 'municipality_code')[0]):06d}"


CHIYODA = municipality("13101")  # 131016
SHIBUYA = municipality("13113")  # 131130
SAPPORO = municipality("01100")  # 011002


class Municipality:
    """A sender: hands out its consecutive seq numbers."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.seq = 0

    def next(self) -> int:
        self.seq += 1
        return self.seq


def person(n: int, **over: Any) -> dict[str, Any]:
    """A full snapshot of person n (Japanese, registered in Chiyoda)."""
    base = {
        "resident_code": resident_code(n),
        "my_number": my_number(n),
        "surname": "山田",
        "given_name": f"太郎{n}",
        "surname_kana": "ヤマダ",
        "given_name_kana": "タロウ",
        "former_surname": None,
        "former_surname_kana": None,
        "alias": None,
        "birth_date": "1980-05-05",
        "sex": "1",
        "municipality_code": CHIYODA,
        "address": "東京都千代田区千代田1-1",
        "resident_kind": "1",
        "protected": None,
    }
    base.update(over)
    return base


def row(sender: Municipality, reason: str, change_date: str, record: dict[str, Any],
        **extra: Any) -> dict[str, Any]:  # fmt: skip
    out = {c: None for c in NOTIFICATION_COLUMNS}
    out.update(record)
    out.update(municipality_code=sender.code, seq=str(extra.pop("seq", None) or sender.next()),
               reason=reason, change_date=change_date)  # fmt: skip
    out.update({k: (None if v is None else str(v)) for k, v in extra.items()})
    return out


def write_csv(path: Path, rows: list[dict[str, Any]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.DictWriter(f, fieldnames=NOTIFICATION_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return path
