"""Per-person walks over the history for `juki check` (SPEC §8): one flag byte per version.

Input: the applied versions of the whole history sorted by (person, application order), as
integer columns. Per person the kernel

1. checks the numbering: versions 1, 2, … n in application order, `recorded_at` never
   decreasing (`VERSION_ORDER` on the version where the order breaks);
2. derives cancellation: an `X1` cancels the same person's earlier version whose notification
   (`municipality_code`, `seq`) it names (`CANCELLED`); `X1` versions and cancelled versions are
   skipped from then on, as reads skip them;
3. walks the remaining (effective) versions: anything after a `D3` (`AFTER_DEATH`), an `A2` with
   no open `D1` (`A2_WITHOUT_D1`), a status the reason does not give (`STATUS_REASON`: A* → 1,
   D1 → 2, D2–D4 → 9, M* keep the status the reasons so far give), a `D1` with no later `A2`
   dated within 14 days once today is past that day (`MOVE_IN_LATE`); and marks the version in
   effect today (`IN_EFFECT`: the last with `change_date` <= today) and the last effective
   version (`CURRENT`).

`notification` is `municipality_code * 2**40 + seq` of the version itself, but for an `X1` row
the notification it cancels (`cancels_municipality_code`, `cancels_seq`): an X1 is never a
cancellation target itself, so one column carries both.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from engine.schema import REASONS

VERSION_ORDER = np.uint8(1)
AFTER_DEATH = np.uint8(2)
A2_WITHOUT_D1 = np.uint8(4)
STATUS_REASON = np.uint8(8)
MOVE_IN_LATE = np.uint8(16)
CANCELLED = np.uint8(32)
IN_EFFECT = np.uint8(64)
CURRENT = np.uint8(128)

MOVE_IN_DAYS = 14  # SPEC §3 D1: a move-in is due within 14 days of the move date
NO_DATE = np.iinfo(np.int32).min  # a null change_date sorts before every day
_A1, _A2, _A4 = REASONS["A1"], REASONS["A2"], REASONS["A4"]
_D1, _D2, _D3, _D4 = REASONS["D1"], REASONS["D2"], REASONS["D3"], REASONS["D4"]
_M1, _M7, _X1 = REASONS["M1"], REASONS["M7"], REASONS["X1"]


def notification_key(municipality_code: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """One int64 per notification: municipality_code (< 10**6) above a 40-bit seq."""
    return np.asarray(municipality_code, np.int64) * (1 << 40) + np.asarray(seq, np.int64)


@njit(cache=True, nogil=True, parallel=True)
def walk_histories(person, version, recorded_at, reason, status, change_date, notification,
                   today):  # type: ignore[no-untyped-def]  # fmt: skip
    """Flag byte per row (rows grouped by person, each person's rows in application order).

    Rows are cut into chunks at person boundaries and the chunks walked in parallel."""
    n = person.shape[0]
    flags = np.zeros(n, np.uint8)
    chunks = 64
    starts = np.empty(chunks + 1, np.int64)
    for c in range(chunks + 1):
        k = min(n, c * n // chunks)
        while 0 < k < n and person[k] == person[k - 1]:  # never split a person
            k += 1
        starts[c] = max(k, starts[c - 1]) if c else 0
    for c in prange(chunks):
        lo = starts[c]
        while lo < starts[c + 1]:
            hi = lo + 1
            while hi < n and person[hi] == person[lo]:
                hi += 1
            _walk_person(lo, hi, version, recorded_at, reason, status, change_date,
                         notification, today, flags)  # fmt: skip
            lo = hi
    return flags


@njit(cache=True, nogil=True)
def remember_current(person, reason, flags, resident_code, my_number, version, resident_of,
                     current_rc, current_mn, current_version):  # type: ignore[no-untyped-def]  # fmt: skip
    """Per person key: the current version's codes and number; `resident_of` also takes the last
    held resident code of a person left with no effective version (every version cancelled)."""
    for i in range(person.shape[0]):
        p = person[i]
        if reason[i] != _X1 and current_version[p] < 0:
            resident_of[p] = resident_code[i]
        if flags[i] & CURRENT:
            resident_of[p] = current_rc[p] = resident_code[i]
            current_mn[p] = my_number[i]
            current_version[p] = version[i]


@njit(inline="always")
def _walk_person(lo, hi, version, recorded_at, reason, status, change_date, notification,
                 today, flags):  # type: ignore[no-untyped-def]  # fmt: skip
    # 1. numbering
    for k in range(lo, hi):
        expected = 1 if k == lo else version[k - 1] + 1
        if version[k] != expected or (k > lo and recorded_at[k] < recorded_at[k - 1]):
            flags[k] |= VERSION_ORDER
    # 2. cancellation: the X1 names the notification, looked up among the earlier versions
    for k in range(lo, hi):
        if reason[k] != _X1:
            continue
        for j in range(k - 1, lo - 1, -1):
            if reason[j] != _X1 and not flags[j] & CANCELLED and notification[j] == notification[k]:
                flags[j] |= CANCELLED
                break
    # 3. the effective versions
    dead = False
    open_d1 = False
    expected_status = -1
    in_effect = -1
    last = -1
    for k in range(lo, hi):
        r = reason[k]
        if r == _X1 or flags[k] & CANCELLED:
            continue
        if dead:
            flags[k] |= AFTER_DEATH
        if r == _A2 and not open_d1:
            flags[k] |= A2_WITHOUT_D1
        if _A1 <= r <= _A4:
            should = 1
        elif r == _D1:
            should = 2
        elif _D2 <= r <= _D4:
            should = 9
        elif _M1 <= r <= _M7:
            should = expected_status
        else:
            should = -1
        if should != -1 and status[k] != should:
            flags[k] |= STATUS_REASON
        expected_status = should if should != -1 else status[k]
        if r == _D3:
            dead = True
        if r == _D1:
            open_d1 = True
        elif not (_M1 <= r <= _M7):
            open_d1 = False
        if r == _D1 and today > change_date[k] + MOVE_IN_DAYS:
            moved_in = False
            for j in range(k + 1, hi):
                if (reason[j] == _A2 and not flags[j] & CANCELLED
                        and change_date[j] <= change_date[k] + MOVE_IN_DAYS):  # fmt: skip
                    moved_in = True
                    break
            if not moved_in:
                flags[k] |= MOVE_IN_LATE
        if change_date[k] <= today:
            in_effect = k
        last = k
    if in_effect >= 0:
        flags[in_effect] |= IN_EFFECT
    if last >= 0:
        flags[last] |= CURRENT


@njit(cache=True, nogil=True)
def held_codes(person, reason, code):  # type: ignore[no-untyped-def]
    """(codes, persons): the well-formed codes (>= 0) of held versions (not X1), once per run
    of equal codes in a person's rows (rows grouped by person); persons as int32 (keys are
    below 2^31: half the memory of 250 M pairs)."""
    out_code = np.empty(code.shape[0], np.int64)
    out_person = np.empty(code.shape[0], np.int32)
    k = 0
    for i in range(code.shape[0]):
        if reason[i] == _X1 or code[i] < 0:
            continue
        if k and out_code[k - 1] == code[i] and out_person[k - 1] == person[i]:
            continue
        out_code[k] = code[i]
        out_person[k] = person[i]
        k += 1
    return out_code[:k].copy(), out_person[:k].copy()


# -- reference twins (plain Python, one person at a time) -------------------------------------
def held_codes_reference(person, reason, code):  # type: ignore[no-untyped-def]
    pairs: list[tuple[int, int]] = []
    for p, r, c in zip(person, reason, code, strict=True):
        if r != _X1 and c >= 0 and (not pairs or pairs[-1] != (int(c), int(p))):
            pairs.append((int(c), int(p)))
    return (np.array([c for c, _ in pairs], np.int64), np.array([p for _, p in pairs], np.int64))
def remember_current_reference(person, reason, flags, resident_code, my_number, version,
                               persons):  # type: ignore[no-untyped-def]  # fmt: skip
    """(resident_of, current_rc, current_mn, current_version) as fresh arrays of `persons`."""
    resident_of = np.full(persons, -1, np.int64)
    current = {}
    for i, p in enumerate(person):
        if reason[i] != _X1:
            resident_of[p] = resident_code[i]
        if flags[i] & CURRENT:
            current[int(p)] = i
    current_rc = np.full(persons, -1, np.int64)
    current_mn = np.full(persons, -1, np.int64)
    current_version = np.full(persons, -1, np.int32)
    for p, i in current.items():
        resident_of[p] = current_rc[p] = resident_code[i]
        current_mn[p], current_version[p] = my_number[i], version[i]
    return resident_of, current_rc, current_mn, current_version
def walk_histories_reference(person, version, recorded_at, reason, status, change_date,
                             notification, today):  # type: ignore[no-untyped-def]  # fmt: skip
    """The same flags from lists of dicts, person by person (no shared state with the kernel)."""
    flags = [0] * len(person)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(person):
        groups.setdefault(int(p), []).append(i)
    for rows in groups.values():
        for pos, i in enumerate(rows):
            before = rows[pos - 1] if pos else None
            if version[i] != (1 if before is None else version[before] + 1) or (
                before is not None and recorded_at[i] < recorded_at[before]
            ):
                flags[i] |= int(VERSION_ORDER)
        cancelled: set[int] = set()
        for pos, i in enumerate(rows):
            if reason[i] == _X1:
                targets = [j for j in rows[:pos] if reason[j] != _X1 and j not in cancelled
                           and notification[j] == notification[i]]  # fmt: skip
                if targets:
                    cancelled.add(targets[-1])
        for j in cancelled:
            flags[j] |= int(CANCELLED)
        effective = [i for i in rows if reason[i] != _X1 and i not in cancelled]
        state = None
        for pos, i in enumerate(effective):
            r = int(reason[i])
            earlier = [int(reason[j]) for j in effective[:pos]]
            if _D3 in earlier:
                flags[i] |= int(AFTER_DEATH)
            last_opening = [x for x in earlier if not _M1 <= x <= _M7]
            if r == _A2 and (not last_opening or last_opening[-1] != _D1):
                flags[i] |= int(A2_WITHOUT_D1)
            should = {**{a: 1 for a in range(_A1, _A4 + 1)}, _D1: 2,
                      **{d: 9 for d in range(_D2, _D4 + 1)}}.get(r)  # fmt: skip
            if should is None and _M1 <= r <= _M7:
                should = state
            if should is not None and should != -1 and status[i] != should:
                flags[i] |= int(STATUS_REASON)
            state = should if should is not None and should != -1 else int(status[i])
            due = int(change_date[i]) + MOVE_IN_DAYS
            if r == _D1 and today > due and not any(
                reason[j] == _A2 and change_date[j] <= due for j in effective[pos + 1 :]
            ):
                flags[i] |= int(MOVE_IN_LATE)
        dated = [i for i in effective if change_date[i] <= today]
        if dated:
            flags[dated[-1]] |= int(IN_EFFECT)
        if effective:
            flags[effective[-1]] |= int(CURRENT)
    return np.array(flags, np.uint8)
