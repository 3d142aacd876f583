"""Medians and spreads of the per-round figures."""
from __future__ import annotations

import math


def median(values):
    """Median of the non-None values (None if there are none)."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    n = len(v)
    mid = n // 2
    return v[mid] if n % 2 else (v[mid - 1] + v[mid]) / 2


def quantile(values, q: float):
    """Linear-interpolation quantile (numpy's default, R type 7), 0 <= q <= 1."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    pos = (len(v) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def spread(values) -> dict | None:
    """{min, q1, median, q3, max, rel}: rel = (max - min) / median, the figure
    the table shows as "±": how far apart the rounds were."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    med = median(v)
    lo, hi = min(v), max(v)
    return {
        "n": len(v),
        "min": lo,
        "q1": quantile(v, 0.25),
        "median": med,
        "q3": quantile(v, 0.75),
        "max": hi,
        "rel": (hi - lo) / med if med else 0.0,
    }


def ratio(value, reference):
    if value is None or reference in (None, 0):
        return None
    return value / reference
