"""An independent oracle of `juki ingest` (SPEC §3, §4): plain dicts, one row at a time.

Written from the SPEC text alone, to check the columnar engine against. Rows are dicts of text
(as in a CSV: None for an empty field). Where the SPEC leaves a choice open, the oracle follows
the implementation's documented choice (marked "choice:" below).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]

REASONS = ("A1", "A2", "A3", "A4", "D1", "D2", "D3", "D4",
           "M1", "M2", "M3", "M4", "M5", "M6", "M7", "X1")  # fmt: skip
NEW_PERSON_REASONS = ("A1", "A3", "A4")
# SPEC §3: the status each reason sets; M-reasons keep the person's status (None).
STATUS_SET_BY = {"A1": 1, "A2": 1, "A3": 1, "A4": 1, "D1": 2, "D2": 9, "D3": 9, "D4": 9}

KANA = re.compile(r"^[ァ-ヶー・]+$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --- SPEC §2: check digits ------------------------------------------------------------------


def _mod11(body: str, weights: tuple[int, ...]) -> int:
    r = sum(w * int(d) for w, d in zip(weights, body, strict=True)) % 11
    return 0 if r <= 1 else 11 - r


def my_number_valid(code: str) -> bool:
    """SPEC §2.1: weights 6 5 4 3 2 7 6 5 4 3 2 over the 11-digit body."""
    return _mod11(code[:11], (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)) == int(code[11])


def resident_code_valid(code: str) -> bool:
    """SPEC §2.2: weights 5 4 3 2 7 6 5 4 3 2 over the 10-digit body."""
    return _mod11(code[:10], (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)) == int(code[10])


def municipality_code_valid(code: str) -> bool:
    """SPEC §2.3: D = (11 − S mod 11) mod 10, S = 6·d1 + 5·d2 + 4·d3 + 3·d4 + 2·d5."""
    s = sum(w * int(d) for w, d in zip((6, 5, 4, 3, 2), code[:5], strict=True))
    return (11 - s % 11) % 10 == int(code[5])


WIDTH = {"resident_code": 11, "previous_resident_code": 11, "my_number": 12,
         "municipality_code": 6, "cancels_municipality_code": 6}  # fmt: skip
CHECK = {"resident_code": resident_code_valid, "previous_resident_code": resident_code_valid,
         "my_number": my_number_valid, "municipality_code": municipality_code_valid,
         "cancels_municipality_code": municipality_code_valid}  # fmt: skip


def _present(row: Row, column: str) -> bool:
    return row.get(column) not in (None, "")


def stateless_rule(row: Row) -> str | None:
    """The first rule of SPEC §4 that the row breaks on its own (no store state), or None."""
    reason = row.get("reason")
    always = ["municipality_code", "seq", "reason", "change_date"]
    for c in always:
        if not _present(row, c):
            return "missing-field"
    if reason == "X1":
        # SPEC §4: an X1 carries municipality_code, seq, change_date and the person's codes;
        # its other record columns may be empty and are ignored.
        required = ["resident_code", "my_number", "cancels_municipality_code", "cancels_seq"]
    else:
        required = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
                    "given_name_kana", "birth_date", "sex", "address", "resident_kind"]  # fmt: skip
        if reason == "M5":
            required.append("previous_resident_code")
    for c in required:
        if not _present(row, c):
            return "missing-field"
    # choice: missing-field comes before unknown-reason (the order of SPEC §4's list); a row of
    # an unknown reason must carry the full record, as every reason but X1 does.
    if reason not in REASONS:
        return "unknown-reason"
    codes = [
        c for c in WIDTH if _present(row, c) and (reason != "X1" or c != "previous_resident_code")
    ]
    for c in codes:
        v = str(row[c])
        if len(v) != WIDTH[c] or not (v.isascii() and v.isdigit()):
            return "code-format"
    for c in codes:
        if not CHECK[c](str(row[c])):
            return "check-digit"
    for c in ("municipality_code", "cancels_municipality_code"):
        if c in codes and not 1 <= int(str(row[c])[:2]) <= 47:
            return "prefecture-range"
    if reason == "X1":
        return None
    if str(row["sex"]) not in ("1", "2"):
        return "sex"
    if str(row["resident_kind"]) not in ("1", "2"):
        return "resident-kind"
    for c in ("surname_kana", "given_name_kana", "former_surname_kana"):
        if _present(row, c) and not KANA.match(str(row[c])):
            return "kana"
    if _present(row, "former_surname") != _present(row, "former_surname_kana"):
        return "former-surname-pair"
    japanese = str(row["resident_kind"]) == "1"
    if japanese and _present(row, "alias"):
        return "alias-japanese"
    if not japanese and _present(row, "former_surname"):
        return "former-surname-foreign"
    if str(row["birth_date"]) > str(row["change_date"]):
        return "birth-after-change"
    return None


# --- the store's state ----------------------------------------------------------------------


@dataclass
class Version:
    number: int
    reason: str
    municipality_code: str  # of the notification (its sender)
    seq: int
    record: Row | None  # the snapshot after the change (None for an X1)
    status: int | None  # status after the change (None for an X1)
    cancelled: bool = False


@dataclass
class Person:
    key: int
    versions: list[Version] = field(default_factory=list)

    def effective(self) -> Version | None:
        """The version read now: the last one that is neither an X1 nor cancelled (SPEC §3)."""
        for v in reversed(self.versions):
            if v.reason != "X1" and not v.cancelled:
                return v
        return None


@dataclass
class FileResult:
    file: str
    applied: int = 0
    rejected: int = 0
    duplicate: int = 0
    held: int = 0
    released: int = 0
    rejects: dict[tuple[str, int], str] = field(default_factory=dict)  # (file, row) → rule

    def counts(self) -> dict[str, int]:
        return {
            k: getattr(self, k) for k in ("applied", "rejected", "duplicate", "held", "released")
        }


class Oracle:
    """Applies notification files as SPEC §4 describes, one row at a time."""

    def __init__(self) -> None:
        self.persons: dict[int, Person] = {}
        self.holder: dict[str, int] = {}  # resident code → the person who holds or ever held it
        self.issued: set[tuple[str, str]] = set()  # ("resident_code" | "my_number", code)
        self.last_seq: dict[str, int] = {}
        self.held: dict[str, dict[int, tuple[str, int, Row]]] = {}

    # -- sequencing (SPEC §4) --

    def ingest_file(self, name: str, rows: list[Row]) -> FileResult:
        out = FileResult(name)
        for i, row in enumerate(rows, start=1):
            code, seq = str(row["municipality_code"]), int(row["seq"])
            last = self.last_seq.get(code, 0)
            held = self.held.setdefault(code, {})
            if seq <= last or seq in held:
                out.duplicate += 1
                continue
            if seq > last + 1:
                held[seq] = (name, i, row)
                out.held += 1
                continue
            rule = self.process(row)
            self.last_seq[code] = seq
            if rule is None:
                out.applied += 1
            else:
                out.rejected += 1
                out.rejects[(name, i)] = rule
            while self.last_seq[code] + 1 in held:
                nxt = self.last_seq[code] + 1
                hfile, hrow, hdata = held.pop(nxt)
                rule = self.process(hdata)
                self.last_seq[code] = nxt
                if rule is None:
                    out.released += 1
                else:
                    out.rejected += 1
                    out.rejects[(hfile, hrow)] = rule
        return out

    # -- one sequenced row: validate, then apply --

    def process(self, row: Row) -> str | None:
        """Validate and apply one row in sequence; the rule it breaks, or None when applied."""
        rule = stateless_rule(row) or self.state_rule(row)
        if rule is None:
            self.apply(row)
        return rule

    def _named(self, row: Row) -> Person | None:
        """SPEC §4: a row names its person by resident_code (M5: by previous_resident_code)."""
        code = row["previous_resident_code"] if row["reason"] == "M5" else row["resident_code"]
        key = self.holder.get(str(code))
        return None if key is None else self.persons[key]

    def _is_issued(self, kind: str, code: Any) -> bool:
        return (kind, str(code)) in self.issued

    def state_rule(self, row: Row) -> str | None:
        reason = row["reason"]
        person = self._named(row)
        current = person.effective() if person else None
        if reason in NEW_PERSON_REASONS:
            if person is None:
                # SPEC §4: a new person carries codes never issued.
                if self._is_issued("resident_code", row["resident_code"]) or self._is_issued(
                    "my_number", row["my_number"]
                ):
                    return "code-issued"
                return None
            if current is None:
                return (
                    "code-issued"  # choice: the code of a person whose every version is cancelled
                )
            if reason == "A1":
                return "person-exists"
        elif person is None or current is None:
            return "unknown-person"
        assert current is not None and current.record is not None
        # SPEC §4: carry the person's current resident_code and my_number, except the one the
        # reason changes.
        if reason == "M5":
            if str(row["previous_resident_code"]) != current.record["resident_code"]:
                return "code-mismatch"
        elif str(row["resident_code"]) != current.record["resident_code"]:
            return "code-mismatch"
        if reason != "M4" and str(row["my_number"]) != current.record["my_number"]:
            return "code-mismatch"
        if reason == "M4" and self._is_issued("my_number", row["my_number"]):
            return "code-issued"
        if reason == "M5" and self._is_issued("resident_code", row["resident_code"]):
            return "code-issued"
        # SPEC §3: D3 — nothing but X1 may follow.
        if current.reason == "D3" and reason != "X1":
            return "after-death"
        # SPEC §4: M1 and D1 keep the municipality_code.
        if (
            reason in ("M1", "D1")
            and str(row["municipality_code"]) != current.record["municipality_code"]
        ):
            return "municipality-changed"
        status = current.status
        if reason == "A2":
            return None if status == 2 else "a2-without-d1"
        if reason in ("A3", "A4"):
            return None if status == 9 else "person-exists"
        if reason in ("D1", "M1"):
            return None if status == 1 else "transition"
        if reason == "X1":
            target = (str(row["cancels_municipality_code"]), int(row["cancels_seq"]))
            return None if target == (current.municipality_code, current.seq) else "x1-target"
        return "transition" if status == 9 else None

    def apply(self, row: Row) -> None:
        reason = row["reason"]
        person = self._named(row)
        if person is None:
            person = Person(key=len(self.persons))
            self.persons[person.key] = person
        code, seq = str(row["municipality_code"]), int(row["seq"])
        number = len(person.versions) + 1
        if reason == "X1":
            top = person.effective()
            assert top is not None
            top.cancelled = True
            person.versions.append(Version(number, reason, code, seq, None, None))
        else:
            current = person.effective()
            status = STATUS_SET_BY.get(reason, current.status if current else None)
            record = {k: (None if v in (None, "") else str(v)) for k, v in row.items()}
            person.versions.append(Version(number, reason, code, seq, record, status))
        # SPEC §4: every code of an applied row is recorded as issued (§2.4).
        self.issued.add(("resident_code", str(row["resident_code"])))
        self.issued.add(("my_number", str(row["my_number"])))
        self.holder.setdefault(str(row["resident_code"]), person.key)

    # -- reads --

    def current(self) -> dict[str, dict[str, Any]]:
        """Per current resident_code, the person as read now (persons with an effective version)."""
        out = {}
        for p in self.persons.values():
            v = p.effective()
            if v is None:
                continue
            assert v.record is not None and v.status is not None
            out[v.record["resident_code"]] = {
                "resident_code": v.record["resident_code"],
                "my_number": v.record["my_number"],
                "status": v.status,
                "surname": v.record["surname"],
                "municipality_code": v.record["municipality_code"],
                "version": v.number,
                "last_version": len(p.versions),
            }
        return out
