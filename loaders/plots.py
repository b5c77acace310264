"""A population pyramid picture (`juki stats --plot FILE.png`): men to the left, women to the
right, five-year bands from the bottom, drawn with matplotlib's Agg backend (no display)."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from loaders.outputs import write_atomically

BANDS = [f"{5 * i}-{5 * i + 4}" for i in range(20)] + ["100+"]


def pyramid_png(by_age_sex: pl.DataFrame, *, title: str) -> bytes:
    """PNG bytes of a pyramid from rows (`age5`, `sex`, `count`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    counts = {(r["age5"], r["sex"]): r["count"] for r in by_age_sex.iter_rows(named=True)}
    men = [counts.get((b, 1), 0) for b in BANDS]
    women = [counts.get((b, 2), 0) for b in BANDS]
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    y = range(len(BANDS))
    ax.barh(y, [-m for m in men], color="#4C72B0", label=f"male ({sum(men):,})")
    ax.barh(y, women, color="#DD8452", label=f"female ({sum(women):,})")
    ax.set_yticks(list(y), BANDS)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(int(v)):,}"))
    widest = max([*men, *women, 1])
    ax.set_xlim(-widest * 1.1, widest * 1.1)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("persons registered")
    ax.set_ylabel("age")
    ax.set_title(title)
    ax.legend(loc="upper right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    sink = io.BytesIO()
    fig.savefig(sink, format="png", metadata={"Software": None})
    plt.close(fig)
    return sink.getvalue()


def write_pyramid(path: Path, by_age_sex: pl.DataFrame, *, title: str) -> None:
    write_atomically(path, pyramid_png(by_age_sex, title=title))
