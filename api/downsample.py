"""Curves from metric chunks, and their downsampling for display.

A 1,000,000-point curve is read as a few hundred Arrow list rows and flattened without a
Python loop per point; the common case (steps already increasing) needs no sort at all.
Two downsamplers, both O(n) NumPy:

- :func:`lttb`: Largest-Triangle-Three-Buckets (Steinarsson 2013), the exact algorithm: the
  loop runs once per output point, each iteration vectorised over its bucket;
- :func:`minmax`: the minimum and maximum of each bucket (keeps every spike; 2 points per bucket;
  below 4 points, the first, the most extreme and the last).

Both always keep the first and last point. Non-finite values (NaN, +-inf) are never chosen
over finite ones within a bucket, but a bucket of only non-finite values keeps one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Curve", "Method", "downsample", "load_curves", "lttb", "minmax"]


class Method(StrEnum):
    """How ``GET /api/runs/{id}/history`` reduces long curves."""

    LTTB = "lttb"
    MINMAX = "minmax"


@dataclass(frozen=True)
class Curve:
    """One key's points, sorted by step, one point per step (the last write wins)."""

    step: np.ndarray
    value: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return len(self.step)

    def take(self, idx: np.ndarray) -> Curve:
        return Curve(self.step[idx], self.value[idx], self.time[idx])


def _flat(col: pa.ChunkedArray, dtype: type) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=dtype)


def load_curves(chunks: pa.Table, *, dedupe: bool = True) -> dict[str, Curve]:
    """Group metric chunks (columns key, seq, step, value, time) into one curve per key.

    Points are ordered by chunk ``seq`` then position; with ``dedupe`` the curve is sorted by
    step keeping the last write of each step (as :func:`assay.sdk.api.history_frame` does),
    else every point is kept in step order (MLflow keeps repeated steps).
    """
    if chunks.num_rows == 0:
        return {}
    keys_col = chunks.column("key")
    seqs = np.asarray(chunks.column("seq").to_numpy(), dtype=np.int64)
    if pc.count_distinct(keys_col).as_py() == 1 and bool(np.all(seqs[1:] >= seqs[:-1])):
        t = chunks  # one key, rows already in seq order (the usual case): no copy at all
    else:
        order = pc.sort_indices(chunks, sort_keys=[("key", "ascending"), ("seq", "ascending")])
        t = chunks.take(order)
    keys = t.column("key").to_pylist()
    out: dict[str, Curve] = {}
    start = 0
    n = len(keys)
    while start < n:
        end = start
        key = keys[start]
        while end < n and keys[end] == key:
            end += 1
        sub = t.slice(start, end - start)
        step = _flat(sub.column("step"), np.int64)
        value = _flat(sub.column("value"), np.float64)
        time = (_flat(sub.column("time"), np.float64) if "time" in sub.column_names
                else np.full(len(step), np.nan))
        out[key] = _ordered(step, value, time, dedupe)
        start = end
    return out


def _ordered(step: np.ndarray, value: np.ndarray, time: np.ndarray, dedupe: bool) -> Curve:
    if len(step) < 2 or bool(np.all(step[1:] > step[:-1])):
        return Curve(step, value, time)
    idx = np.argsort(step, kind="stable")
    s = step[idx]
    if dedupe:
        keep = np.empty(len(s), dtype=bool)
        keep[:-1] = s[1:] != s[:-1]
        keep[-1] = True
        idx = idx[keep]
    return Curve(step[idx], value[idx], time[idx])


def lttb(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """Indices of the ``n_out`` points Largest-Triangle-Three-Buckets keeps (sorted)."""
    n = len(x)
    if n_out >= n:
        return np.arange(n)
    if n_out < 3:
        return np.array([0, n - 1])[: max(n_out, 1)] if n > 1 else np.arange(n)
    xf = x.astype(np.float64, copy=False)
    finite = np.isfinite(y)
    yz = np.where(finite, y, 0.0)
    edges = np.linspace(1, n - 1, n_out - 1).astype(np.int64)  # n_out - 2 buckets in 1..n-2
    csx = np.concatenate(([0.0], np.cumsum(xf)))
    csy = np.concatenate(([0.0], np.cumsum(yz)))
    csn = np.concatenate(([0], np.cumsum(finite)))
    lo, hi = edges[:-1], edges[1:]
    cnt = np.maximum(csn[hi] - csn[lo], 1)
    mean_x = (csx[hi] - csx[lo]) / (hi - lo)
    mean_y = (csy[hi] - csy[lo]) / cnt
    # The third vertex of bucket i's triangles: the mean of bucket i + 1 (the last point for
    # the last bucket).
    nx = np.append(mean_x[1:], xf[n - 1])
    ny = np.append(mean_y[1:], yz[n - 1] if finite[n - 1] else mean_y[-1])
    out = np.empty(n_out, dtype=np.int64)
    out[0], out[-1] = 0, n - 1
    # Twice the triangle's area, up to sign: (ax - cx)(y - ay) + (x - ax)(cy - ay), which is
    # linear in (x, y): dx*y + dy*x - (dx*ay + dy*ax). Its argmax is the bucket's pick.
    all_finite = bool(finite.all())
    a = 0
    los, his = lo.tolist(), hi.tolist()
    for i in range(n_out - 2):
        s, e = los[i], his[i]
        ax, ay = xf[a], yz[a]
        dx, dy = ax - nx[i], ny[i] - ay
        area = np.abs(dx * y[s:e] + dy * xf[s:e] - (dx * ay + dy * ax))
        if not all_finite:
            area[~finite[s:e]] = -1.0
        a = s + int(area.argmax())
        out[i + 1] = a
    return out


def minmax(y: np.ndarray, n_out: int) -> np.ndarray:
    """Indices of each bucket's minimum and maximum (plus first and last), sorted."""
    n = len(y)
    if n_out >= n:
        return np.arange(n)
    if n_out < 4:  # no room for a bucket's pair: first, the most extreme point, last
        return _few(y, n_out)
    nb = (n_out - 2) // 2
    k = -(-n // nb)
    pad = nb * k - n
    finite = np.isfinite(y)
    ylo = np.where(finite, y, np.inf)
    yhi = np.where(finite, y, -np.inf)
    if pad:
        ylo = np.concatenate((ylo, np.full(pad, np.inf)))
        yhi = np.concatenate((yhi, np.full(pad, -np.inf)))
    base = np.arange(nb, dtype=np.int64) * k
    imin = base + ylo.reshape(nb, k).argmin(axis=1)
    imax = base + yhi.reshape(nb, k).argmax(axis=1)
    idx = np.unique(np.concatenate(([0], imin, imax, [n - 1])))
    return idx[idx < n]


def _few(y: np.ndarray, n_out: int) -> np.ndarray:
    """At most ``n_out`` (< 4) indices: first, last, then the interior point farthest from
    the mean of the two (finite points preferred, as in the buckets)."""
    n = len(y)
    if n_out <= 1 or n == 1:
        return np.array([0])
    ends = np.array([0, n - 1])
    if n_out == 2 or n == 2:
        return ends
    inner = y[1:-1]
    finite = np.isfinite(inner)
    end_vals = y[ends][np.isfinite(y[ends])]
    ref = float(end_vals.mean()) if len(end_vals) else 0.0
    score = np.where(finite, np.abs(inner - ref), -1.0)
    return np.array([0, 1 + int(score.argmax()), n - 1])


def downsample(curve: Curve, max_points: int, method: Method = Method.LTTB) -> Curve:
    """The curve reduced to at most ``max_points`` points (unchanged if already short)."""
    if len(curve) <= max_points:
        return curve
    if method is Method.MINMAX:
        idx = minmax(curve.value, max_points)
    else:
        idx = lttb(curve.step, curve.value, max_points)
    return curve.take(idx)
