"""The numba state-machine kernel behaves exactly as its plain-Python twin on random streams."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.schema import REASONS
from engine.transitions import State, apply_rows, apply_rows_py

CODES = 6


def _run(kernel, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:  # type: ignore[no-untyped-def]
    n = len(rows["reason"])
    state = State(CODES, CODES, n + 1, n + 1)
    outs = (np.zeros(n, np.int8), np.full(n, -1, np.int64), np.zeros(n, np.int32),
            np.zeros(n, np.int8), np.zeros(n, np.bool_), np.zeros(n, np.bool_))  # fmt: skip
    kernel(rows["reason"], rows["rc"], rows["mn"], rows["prev"], rows["mc"], rows["seq"],
           rows["cmc"], rows["cseq"], rows["skip"], *state.arrays(), *outs)  # fmt: skip
    return (*outs, state.top, state.last_version, state.rc_owner, state.mn_owner)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(REASONS.values())), st.integers(0, CODES - 1),
                          st.integers(0, CODES - 1), st.integers(0, CODES - 1),
                          st.integers(1, 2), st.integers(1, 8), st.booleans()),
                min_size=1, max_size=40))  # fmt: skip
def test_numba_kernel_matches_its_python_twin(stream: list[tuple[int, ...]]) -> None:
    cols = list(zip(*stream, strict=True))
    rows = {
        "reason": np.array(cols[0], np.int8),
        "rc": np.array(cols[1], np.int64),
        "mn": np.array(cols[2], np.int64),
        "prev": np.array(cols[3], np.int64),
        "mc": np.array(cols[4], np.int32),
        "seq": np.array(cols[5], np.int64),
        "cmc": np.array(cols[4], np.int32),
        "cseq": np.array(cols[5], np.int64) - 1,
        "skip": np.array(cols[6], np.bool_) & (np.arange(len(stream)) % 5 == 4),
    }
    fast, slow = _run(apply_rows, rows), _run(apply_rows_py, rows)
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(a, b)
