"""The SPEC §3/§4 state machine: rules that need the person's state, applied row by row.

Rows arrive in application order, already sequenced and checked by the stateless rules. Each row
resolves its person through the owners of its codes, is checked against the person's state and,
when applied, pushes a snapshot (an `X1` pops one: the cancelled notification is ignored from
then on). State is held in flat integer arrays so the walk runs as a numba kernel:

- codes are dense ids (`cid`) per kind; `rc_owner[cid]` / `mn_owner[cid]` is the local person the
  code was ever issued to (-1: never issued). Owners are never cleared: codes are never reissued.
- a person's effective history is a linked stack of snapshots; `top[p]` is the version in effect
  (-1: the person has no effective version, e.g. an `A1` that was cancelled).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.schema import REASONS

STATEFUL_RULES = [
    "unknown-person", "person-exists", "code-mismatch", "code-issued", "municipality-changed",
    "transition", "after-death", "a2-without-d1", "x1-target",
]  # fmt: skip
(UNKNOWN_PERSON, PERSON_EXISTS, CODE_MISMATCH, CODE_ISSUED, MUNICIPALITY_CHANGED, TRANSITION,
 AFTER_DEATH, A2_WITHOUT_D1, X1_TARGET) = range(1, 10)  # fmt: skip
SKIPPED = -1  # row already rejected by a stateless rule

A1, A2, A3, A4 = REASONS["A1"], REASONS["A2"], REASONS["A3"], REASONS["A4"]
D1, D2, D3, D4 = REASONS["D1"], REASONS["D2"], REASONS["D3"], REASONS["D4"]
M1, M4, M5, X1 = REASONS["M1"], REASONS["M4"], REASONS["M5"], REASONS["X1"]


class State:
    """Flat arrays of persons, snapshots and code owners for one ingest session."""

    def __init__(self, n_rc: int, n_mn: int, persons: int, snapshots: int) -> None:
        self.rc_owner = np.full(n_rc, -1, np.int64)
        self.mn_owner = np.full(n_mn, -1, np.int64)
        self.top = np.full(persons, -1, np.int64)
        self.last_version = np.zeros(persons, np.int32)
        self.snap_status = np.zeros(snapshots, np.int8)
        self.snap_reason = np.zeros(snapshots, np.int8)
        self.snap_rc = np.full(snapshots, -1, np.int64)
        self.snap_mn = np.full(snapshots, -1, np.int64)
        self.snap_mc = np.zeros(snapshots, np.int32)
        self.snap_seq = np.zeros(snapshots, np.int64)
        self.snap_prev = np.full(snapshots, -1, np.int64)
        self.counts = np.zeros(2, np.int64)  # [persons used, snapshots used]

    def push_snapshot(
        self, person: int, status: int, reason: int, rc: int, mn: int, mc: int, seq: int
    ) -> None:
        """Load one effective version of a person known to the store (oldest first)."""
        s = self.counts[1]
        self.snap_status[s], self.snap_reason[s] = status, reason
        self.snap_rc[s], self.snap_mn[s], self.snap_mc[s], self.snap_seq[s] = rc, mn, mc, seq
        self.snap_prev[s] = self.top[person]
        self.top[person] = s
        self.counts[1] = s + 1

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.rc_owner, self.mn_owner, self.top, self.last_version, self.snap_status,
                self.snap_reason, self.snap_rc, self.snap_mn, self.snap_mc, self.snap_seq,
                self.snap_prev, self.counts)  # fmt: skip


def apply_rows_py(
    reason, rc, mn, prev_rc, mc, seq, cancels_mc, cancels_seq, skip,
    rc_owner, mn_owner, top, last_version, snap_status, snap_reason, snap_rc, snap_mn, snap_mc,
    snap_seq, snap_prev, counts,
    out_rule, out_person, out_version, out_status, out_new_rc, out_new_mn,
):  # fmt: skip
    """Walk rows in application order; fill out_* (rule 0 = applied). Mutates the state."""
    for i in range(reason.shape[0]):
        out_person[i] = -1
        if skip[i]:
            out_rule[i] = SKIPPED
            continue
        r = reason[i]
        rule = 0
        p = -1
        cur = -1
        creates = False
        if r == A1 or ((r == A3 or r == A4) and (rc[i] < 0 or rc_owner[rc[i]] < 0)):
            # A new person: both codes must never have been issued.
            if rc_owner[rc[i]] >= 0:
                rule = PERSON_EXISTS if top[rc_owner[rc[i]]] >= 0 else CODE_ISSUED
            elif mn_owner[mn[i]] >= 0:
                rule = CODE_ISSUED
            else:
                creates = True
        else:
            named = prev_rc[i] if r == M5 else rc[i]
            p = rc_owner[named] if named >= 0 else -1
            if p < 0:
                rule = UNKNOWN_PERSON
            elif top[p] < 0:
                rule = CODE_ISSUED if (r == A3 or r == A4) else UNKNOWN_PERSON
            else:
                cur = top[p]
                if snap_rc[cur] != named:
                    rule = CODE_MISMATCH
                elif r != M4 and snap_mn[cur] != mn[i]:
                    rule = CODE_MISMATCH
                elif r == M4 and mn_owner[mn[i]] >= 0:
                    rule = CODE_ISSUED
                elif r == M5 and rc_owner[rc[i]] >= 0:
                    rule = CODE_ISSUED
                elif r != X1 and snap_reason[cur] == D3:
                    rule = AFTER_DEATH
                elif (r == M1 or r == D1) and mc[i] != snap_mc[cur]:
                    rule = MUNICIPALITY_CHANGED
                elif r == A2:
                    if snap_status[cur] != 2:
                        rule = A2_WITHOUT_D1
                elif r == A3 or r == A4:
                    if snap_status[cur] != 9:
                        rule = PERSON_EXISTS
                elif r == D1 or r == M1:
                    if snap_status[cur] != 1:
                        rule = TRANSITION
                elif r == X1:
                    if snap_mc[cur] != cancels_mc[i] or snap_seq[cur] != cancels_seq[i]:
                        rule = X1_TARGET
                elif snap_status[cur] == 9:  # D2-D4, M2-M7 need a registered or moved-out person
                    rule = TRANSITION
        out_rule[i] = rule
        if rule != 0:
            continue
        if creates:
            p = counts[0]
            counts[0] = p + 1
            rc_owner[rc[i]] = p
            mn_owner[mn[i]] = p
            out_new_rc[i] = True
            out_new_mn[i] = True
        if r == M5:
            rc_owner[rc[i]] = p
            out_new_rc[i] = True
        if r == M4:
            mn_owner[mn[i]] = p
            out_new_mn[i] = True
        last_version[p] += 1
        out_person[i] = p
        out_version[i] = last_version[p]
        if r == X1:
            top[p] = snap_prev[cur]
            out_status[i] = 0
            continue
        if r == D1:
            status = 2
        elif r == D2 or r == D3 or r == D4:
            status = 9
        elif r <= A4:
            status = 1
        else:
            status = snap_status[cur]
        s = counts[1]
        counts[1] = s + 1
        snap_status[s] = status
        snap_reason[s] = r
        snap_rc[s] = rc[i]
        snap_mn[s] = mn[i]
        snap_mc[s] = mc[i]
        snap_seq[s] = seq[i]
        snap_prev[s] = cur
        top[p] = s
        out_status[i] = status


apply_rows = njit(cache=True, nogil=True)(apply_rows_py)
