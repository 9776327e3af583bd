"""Rendering of sweep reports: one self-contained HTML page (inline CSS, inline SVG charts
drawn here, no scripts and no external references, so it opens anywhere offline) and a
Markdown summary. The figures come from :class:`assay.agents.report.SweepReport`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store.control import Decision
    from .report import SweepReport
    from .report_analysis import TrialRow

__all__ = ["bar_chart", "compute_rows", "describe_param", "fmt_duration", "fmt_num",
           "fmt_when", "launch_rows", "line_chart", "other_rows", "override_rows",
           "render_html", "settings_rows", "stop_rows"]

COLORS = {"completed": "#2563eb", "stopped": "#ea8c00", "failed": "#dc2626",
          "best": "#15803d", "regret": "#7c3aed", "running": "#6b7280", "pending": "#6b7280"}


# -- formatting ------------------------------------------------------------------------------
def fmt_num(v: Any) -> str:
    """A short, readable number (4 significant digits); ``–`` for None."""
    if v is None:
        return "–"
    if isinstance(v, bool | str | int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def fmt_duration(s: float | None) -> str:
    """``"12.3s"``, ``"4m05s"``, ``"2h03m"``; ``–`` for None."""
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.3g}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def fmt_when(t: float | None) -> str:
    """Seconds since the sweep started as ``+1m23s``."""
    return "–" if t is None else "+" + fmt_duration(max(0.0, t))


def describe_param(v: Any) -> str:
    """A search-space entry in words: ``loguniform [0.0001, 1]``, ``fixed 30``."""
    if isinstance(v, dict) and len(v) == 1:
        (kind, arg), = v.items()
        if isinstance(arg, list | tuple):
            return f"{kind} [{', '.join(fmt_num(a) for a in arg)}]"
        return f"{kind} {fmt_num(arg)}"
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return f"fixed {fmt_num(v)}"


# -- decision tables ---------------------------------------------------------------------
def as_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rel(t: float | None, t0: float | None) -> float | None:
    return None if t is None or t0 is None else t - t0


def _cfg_text(config: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={fmt_num(config[k])}" for k in keys if k in config)


def _why_launch(e: dict[str, Any]) -> str:
    parts = [str(e.get("method", "?"))]
    if as_float(e.get("acquisition_value")) is not None:
        parts.append(f"acquisition {fmt_num(e['acquisition_value'])}")
    mu, sd, iv = e.get("predicted_mean"), e.get("predicted_std"), e.get("predicted_interval")
    if as_float(mu) is not None:
        if (isinstance(iv, list) and len(iv) == 2
                and all(as_float(v) is not None for v in iv)):
            # The central 68% interval, in the objective's units (asymmetric when warped).
            text = f"predicted {fmt_num(mu)} (68% {fmt_num(iv[0])} to {fmt_num(iv[1])})"
        else:
            text = f"predicted {fmt_num(mu)}" + (f" ± {fmt_num(sd)}" if as_float(sd) is not None
                                                 else "")
        at = e.get("predicted_at_observed_bound")
        if isinstance(at, list) and at:
            # Quantiles past every observation are shown at the observed extreme.
            text += f", {'/'.join(map(str, at))} clipped to the observed range"
        parts.append(text)
    inc = e.get("incumbent")
    if isinstance(inc, dict) and as_float(inc.get("value")) is not None:
        parts.append(f"incumbent {fmt_num(inc['value'])}")
    for k in ("why", "sampler", "reevaluates"):
        if e.get(k):
            parts.append(f"{k} {e[k]}" if k != "why" else str(e[k]))
    return "; ".join(parts)


def _outcome(t: TrialRow | None) -> str:
    if t is None:
        return ""
    if t.final is not None:
        return f"{t.status} {fmt_num(t.final)}"
    if t.last is not None:
        return f"{t.status} at {fmt_num(t.last)}"
    return t.status


def launch_rows(launches: list[Decision], index_of: dict[str, int], t0: float | None,
                trials: list[TrialRow], keys: list[str]) -> list[dict[str, Any]]:
    """One row per launch: when, which trial, its config, why the searcher chose it."""
    by = {t.trial_id: t for t in trials}
    rows = []
    for d in launches:
        e = dict(d.explanation)
        cfg = dict(e.get("config") or (by[d.trial_id].config if d.trial_id in by else {}))
        rows.append({"t": _rel(d.time, t0), "index": index_of.get(d.trial_id, 0),
                     "trial_id": d.trial_id, "config": _cfg_text(cfg, keys),
                     "method": str(e.get("method", "")), "why": _why_launch(e),
                     "outcome": _outcome(by.get(d.trial_id)),
                     "evidence": {k: v for k, v in e.items() if k != "config"}})
    return rows


def with_interval(v: float | None, iv: Sequence[float] | None) -> str:
    if v is None:
        return "–"
    return fmt_num(v) + (f" [{fmt_num(iv[0])}, {fmt_num(iv[1])}]"
                         if iv and fmt_num(iv[0]) != fmt_num(iv[1]) else "")


def _value_at(t: TrialRow | None, step: Any) -> float | None:
    s = as_float(step)
    if t is None or s is None:
        return None
    vals = [v for x, v in t.curve if x <= s]
    return vals[-1] if vals else None


def stop_evidence(e: dict[str, Any]) -> dict[str, Any]:
    ev = dict(e.get("evidence") or {})
    if ev and all(":" in k and isinstance(v, dict) for k, v in ev.items()):  # AllOf: per rule
        merged: dict[str, Any] = {}
        for v in ev.values():
            merged.update({k: x for k, x in v.items() if k not in merged})
        return merged
    return ev


def stop_rows(decisions: list[Decision], index_of: dict[str, int], t0: float | None,
              trials: list[TrialRow]) -> list[dict[str, Any]]:
    """One row per early stop (by a stopper, or a person's ``stop_run``) with its evidence."""
    by = {t.trial_id: t for t in trials}
    rows = []
    for d in decisions:
        e = dict(d.explanation)
        if d.kind == "stop":
            ev = stop_evidence(e)
            pred = as_float(ev.get("predicted_final"))
            iv = ev.get("interval") if isinstance(ev.get("interval"), list) else None
            ptxt = with_interval(pred, iv if iv and len(iv) == 2 else None)
            rows.append({
                "t": _rel(d.time, t0), "index": index_of.get(d.trial_id, 0),
                "trial_id": d.trial_id, "by": "stopper", "rule": str(e.get("rule", "")),
                "step": ev.get("step", ev.get("rung_step")),
                "value": next((ev[k] for k in ("value_at_rung", "best", "value") if k in ev),
                              _value_at(by.get(d.trial_id), ev.get("step"))),
                "reference": ev.get("cutoff", ev.get("reference", ev.get("threshold"))),
                "predicted": ptxt, "probability": as_float(ev.get("probability_worse")),
                "message": str(e.get("message") or d.summary),
                "also": list(ev.get("also_fired", [])), "evidence": ev})
        elif d.kind == "override" and e.get("action") == "stop_run" and d.trial_id:
            t = by.get(d.trial_id)
            rows.append({
                "t": _rel(d.time, t0), "index": index_of.get(d.trial_id, 0),
                "trial_id": d.trial_id, "by": "person", "rule": f"person ({e.get('actor', '?')})",
                "step": t.curve[-1][0] if t and t.curve else None,
                "value": t.last if t else None, "reference": None, "predicted": "–",
                "probability": None, "message": str(e.get("reason") or d.summary), "also": [],
                "evidence": e})
    return rows


def other_rows(decisions: list[Decision], index_of: dict[str, int],
               t0: float | None) -> list[dict[str, Any]]:
    """Retries, relaunches after an agent restart, failures, skips, stale marks and the
    finish, in order."""
    kinds = ("retry", "resume", "fail", "skip", "stale", "reevaluate", "finish")
    return [{"t": _rel(d.time, t0), "kind": d.kind,
             "trial": f"#{index_of[d.trial_id]}" if d.trial_id in index_of else d.trial_id,
             "summary": d.summary} for d in decisions if d.kind in kinds]


def override_rows(overrides: list[Any], decisions: list[Decision],
                  t0: float | None) -> list[dict[str, Any]]:
    """What supervisors asked for, who, why, and what the agent made of it."""
    applied = {d.explanation.get("override_id"): d for d in decisions if d.kind == "override"}
    rows = []
    for o in overrides:
        d = applied.pop(o.override_id, None)
        rows.append({"t": _rel(o.time, t0), "actor": o.actor, "action": o.action,
                     "params": json.dumps(o.params, default=str) if o.params else "",
                     "reason": o.reason, "status": str(o.status),
                     "result": o.result or (d.summary if d else ""),
                     "applied_t": _rel(d.time, t0) if d else None})
    for d in applied.values():  # decisions whose override rows are gone (or another store)
        e = d.explanation
        rows.append({"t": _rel(d.time, t0), "actor": str(e.get("actor", "")),
                     "action": str(e.get("action", "")),
                     "params": json.dumps(e.get("params") or {}, default=str),
                     "reason": str(e.get("reason", "")), "status": str(e.get("status", "")),
                     "result": d.summary, "applied_t": _rel(d.time, t0)})
    return rows


def settings_rows(r: SweepReport) -> list[tuple[str, str]]:
    """The objective's settings as (name, text) rows."""
    s = r.spec
    return [("metric", f"{r.metric} ({r.mode})"), ("train", str(s.get("train", ""))),
            *[(k, json.dumps(s.get(k), default=str)) for k in
              ("searcher", "stoppers", "budget", "concurrency", "resources")],
            ("finished because", str((r.finish or {}).get("summary", "–")))]


def compute_rows(c: dict[str, Any]) -> list[tuple[str, str]]:
    """The compute figures as (name, text) rows."""
    return [("trials", f"{c['trials']} ("
             + ", ".join(f"{n} {k}" for k, n in c["by_status"].items()) + ")"),
            ("sweep wall clock", fmt_duration(c["sweep_wall_s"])),
            ("trial wall time (sum)", fmt_duration(c["trial_wall_s"])),
            ("CPU-hours", f"{c['cpu_hours']:.4g}"), ("GPU-hours", f"{c['gpu_hours']:.4g}"),
            ("slot utilisation", "–" if c["utilization"] is None else f"{c['utilization']:.0%}"),
            ("budget", json.dumps(c["budget"])), ("source", c["source"])]


# -- SVG charts ------------------------------------------------------------------------------
def _finite(*vs: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in vs)


def _ticks(lo: float, hi: float, n: int = 5) -> tuple[float, float, list[float]]:
    """A nice domain covering [lo, hi] and its ticks (steps of 1, 2 or 5 x 10^k)."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = (lo - pad if lo - pad >= 0 or lo < 0 else 0.0), hi + pad
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start, end = math.floor(lo / step) * step, math.ceil(hi / step) * step
    ticks = [start + i * step for i in range(round((end - start) / step) + 1)]
    return start, end, ticks


def _robust_range(ys: Sequence[float]) -> tuple[float, float]:
    """The y range to draw: all values, unless a few outliers (a diverged loss of 250 among
    values near 1) would flatten the rest; those are then drawn at the edge."""
    s = sorted(ys)
    if len(s) < 8:
        return s[0], s[-1]
    q25, q75 = s[len(s) // 4], s[-1 - len(s) // 4]
    iqr = q75 - q25
    if iqr <= 0:  # most values equal (a regret of 0): nothing is an outlier
        return s[0], s[-1]
    lo = q25 - 3 * iqr if s[0] < q25 - 10 * iqr else s[0]
    hi = q75 + 3 * iqr if s[-1] > q75 + 10 * iqr else s[-1]
    return lo, hi


def _tick_text(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.2e}" if a >= 1e5 or a < 1e-3 else f"{v:.4g}"


def line_chart(series: Sequence[dict[str, Any]], *, title: str, xlabel: str, ylabel: str,
               w: int = 520, h: int = 270, integer_x: bool = False,
               markers: Sequence[tuple[float, float, str]] = ()) -> str:
    """An SVG chart of several series.

    Args:
        series: Each ``{"name", "color", "kind", "points", "width"?, "opacity"?}``;
            ``kind`` is ``line``, ``step`` (a best-so-far staircase), ``dots`` or ``hollow``;
            ``points`` are ``(x, y)`` or ``(x, y, tooltip)``. Non-finite points
            are skipped. A series with ``"legend": False``, or with no points, stays out of
            the legend (``"legend_only": True`` shows a series that has none).
        title, xlabel, ylabel: Texts.
        w, h: Size in pixels.
        integer_x: Label only whole numbers on the x axis (trial numbers).
        markers: Extra ``(x, y, tooltip)`` crosses (e.g. where trials were stopped).
    """
    ml, mr, mt, mb = 62, 14, 46, 44
    pw, ph = w - ml - mr, h - mt - mb
    pts = [(p[0], p[1]) for s in series for p in s["points"] if _finite(p[0], p[1])]
    out = [(f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           f'aria-label="{escape(title)}">'),
           f'<text class="ct" x="{ml}" y="16">{escape(title)}</text>']
    if not pts:
        out.append(f'<text class="empty" x="{w / 2}" y="{h / 2}" text-anchor="middle">'
                   "no data yet</text></svg>")
        return "".join(out)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, xt = _ticks(min(xs), max(xs))
    lo, hi = _robust_range(ys)
    y0, y1, yt = _ticks(lo, hi)
    if lo > min(ys) or hi < max(ys):
        out.append(f'<text class="tick" x="{w - mr}" y="{h - 6}" text-anchor="end">'
                   "outliers drawn at the edge</text>")
    if integer_x:
        xt = [t for t in xt if float(t).is_integer()]
        if len(xt) > 12:
            xt = xt[:: math.ceil(len(xt) / 10)]

    def X(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * pw

    def Y(y: float) -> float:
        return mt + ph - (min(max(y, y0), y1) - y0) / (y1 - y0) * ph

    for t in yt:
        out.append(f'<line class="grid" x1="{ml}" x2="{ml + pw}" y1="{Y(t):.1f}" '
                   f'y2="{Y(t):.1f}"/><text class="tick" x="{ml - 6}" y="{Y(t) + 4:.1f}" '
                   f'text-anchor="end">{_tick_text(t)}</text>')
    for t in xt:
        out.append(f'<line class="grid" x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{mt}" '
                   f'y2="{mt + ph}"/><text class="tick" x="{X(t):.1f}" y="{mt + ph + 16}" '
                   f'text-anchor="middle">{_tick_text(t)}</text>')
    out.append(f'<rect class="frame" x="{ml}" y="{mt}" width="{pw}" height="{ph}"/>')
    out.append(f'<text class="al" x="{ml + pw / 2}" y="{h - 6}" text-anchor="middle">'
               f"{escape(xlabel)}</text>")
    out.append(f'<text class="al" transform="translate(14 {mt + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(ylabel)}</text>')
    for s in series:
        good = [p for p in s["points"] if _finite(p[0], p[1])]
        if not good:
            continue
        c, kind = s["color"], s.get("kind", "line")
        sw, op = s.get("width", 2), s.get("opacity", 1)
        tip = escape(s.get("tooltip", s.get("name", "")))
        if kind in ("line", "step"):
            d = f"M{X(good[0][0]):.1f},{Y(good[0][1]):.1f}"
            for (xb, yb, *_) in good[1:]:
                d += (f" H{X(xb):.1f} V{Y(yb):.1f}" if kind == "step"
                      else f" L{X(xb):.1f},{Y(yb):.1f}")
            out.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="{sw}" '
                       f'stroke-opacity="{op}" stroke-linejoin="round"><title>{tip}</title>'
                       "</path>")
            continue
        for p in good:
            label = escape(str(p[2]) if len(p) > 2 else f"{s.get('name', '')}: {fmt_num(p[1])}")
            fill = "#fff" if kind == "hollow" else c
            out.append(f'<circle cx="{X(p[0]):.1f}" cy="{Y(p[1]):.1f}" r="4" fill="{fill}" '
                       f'stroke="{c}" stroke-width="1.6"><title>{label}</title></circle>')
    for mx, my, label in markers:
        if _finite(mx, my):
            x, y = X(mx), Y(my)
            out.append(f'<path d="M{x - 4:.1f},{y - 4:.1f} L{x + 4:.1f},{y + 4:.1f} '
                       f'M{x - 4:.1f},{y + 4:.1f} L{x + 4:.1f},{y - 4:.1f}" '
                       f'stroke="{COLORS["stopped"]}" stroke-width="2"><title>{escape(label)}'
                       "</title></path>")
    lx = w - mr
    shown = [s for s in series if s.get("legend", True)
             and (s.get("legend_only") or any(_finite(p[0], p[1]) for p in s["points"]))]
    for s in reversed(shown):
        label = escape(s["name"])
        lx -= 7 * len(s["name"]) + 26
        out.append(f'<rect x="{lx}" y="24" width="12" height="10" rx="2" fill="{s["color"]}"/>'
                   f'<text class="lg" x="{lx + 16}" y="33">{label}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, w: int = 520,
              fmt: Callable[[float], str] = lambda v: f"{v:.1%}") -> str:
    """A horizontal SVG bar chart of ``(label, value)`` (values from 0 up)."""
    ml, bh, gap = 130, 20, 8
    h = 34 + len(items) * (bh + gap) + 6
    top = max([v for _, v in items] + [1e-12])
    out = [(f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           f'aria-label="{escape(title)}"><text class="ct" x="8" y="16">{escape(title)}</text>')]
    for i, (label, v) in enumerate(items):
        y = 30 + i * (bh + gap)
        bw = max(1.0, (w - ml - 70) * max(0.0, v) / top)
        out.append(f'<text class="tick" x="{ml - 8}" y="{y + 14}" text-anchor="end">'
                   f"{escape(label)}</text>"
                   f'<rect x="{ml}" y="{y}" width="{bw:.1f}" height="{bh}" rx="3" '
                   f'fill="{COLORS["completed"]}"><title>{escape(label)}: {fmt(v)}</title></rect>'
                   f'<text class="tick" x="{ml + bw + 6:.1f}" y="{y + 14}">{fmt(v)}</text>')
    out.append("</svg>")
    return "".join(out)


# -- the page --------------------------------------------------------------------------------
CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:#1f2937;background:#f5f6f8}main{max-width:1160px;margin:0 auto;
padding:24px}h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}
h3{font-size:15px;margin:16px 0 8px}.sub{color:#6b7280}section{background:#fff;
border:1px solid #e5e7eb;border-radius:10px;padding:18px 20px;margin:16px 0}
nav{margin:12px 0}nav a{margin-right:14px;color:#2563eb;text-decoration:none}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:12px;
margin-top:16px}.kpi{background:#fff;border:1px solid #e5e7eb;border-radius:10px;
padding:12px 14px}.kpi b{display:block;font-size:20px}.kpi span{color:#6b7280;font-size:12px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:14px}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{background:#f9fafb;font-weight:600;white-space:nowrap}td.n{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}tr.best td{background:#ecfdf3}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f3f4f6;padding:1px 4px;
border-radius:4px}.badge{display:inline-block;padding:0 7px;border-radius:9px;
font-size:12px;color:#fff}.completed{background:#2563eb}.stopped{background:#ea8c00}
.failed,.rejected{background:#dc2626}.applied{background:#15803d}
.running,.pending,.finished,.paused{background:#6b7280}
details pre{white-space:pre-wrap;font-size:11px;max-height:260px;overflow:auto;
background:#f9fafb;padding:8px;border-radius:6px}summary{cursor:pointer;color:#2563eb}
svg.chart{max-width:100%;height:auto;background:#fff}svg .grid{stroke:#eef0f3}
svg .frame{fill:none;stroke:#d1d5db}svg .tick,svg .lg{font-size:11px;fill:#4b5563}
svg .al{font-size:12px;fill:#374151}svg .ct{font-size:13px;font-weight:600;fill:#111827}
svg .empty{fill:#9ca3af}.bar{display:flex;height:22px;border-radius:6px;overflow:hidden;
margin:8px 0;max-width:640px}.bar div{color:#fff;font-size:12px;padding:2px 8px;
white-space:nowrap}.note{color:#6b7280}footer{color:#9ca3af;font-size:12px;margin:20px 0}
"""


def _td(v: Any, num: bool = False, raw: bool = False) -> str:
    text = v if raw else escape(v if isinstance(v, str) else fmt_num(v))
    return f'<td class="n">{text}</td>' if num else f"<td>{text}</td>"


def _table(head: Sequence[str], rows: Sequence[str]) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    return f'<div class="scroll"><table><thead><tr>{h}</tr></thead><tbody>{"".join(rows)}' \
        "</tbody></table></div>"


def _tn(i: Any) -> str:
    return f"#{i}"


def _pct(p: float | None) -> str:
    return "–" if p is None else f"{p:.0%}"


def _badge(status: str) -> str:
    return f'<span class="badge {escape(status)}">{escape(status)}</span>'


def _time_axis(values: list[float | None]) -> tuple[float, str]:
    span = max([v for v in values if v is not None] + [0.0])
    if span < 120:
        return 1.0, "seconds since start"
    if span < 7200:
        return 60.0, "minutes since start"
    return 3600.0, "hours since start"


def _progress_charts(r: SweepReport) -> str:
    m = r.metric
    charts = []
    for key, xl in (("by_index", "trial (launch order)"), ("by_time", None)):
        rows = r.progress[key]
        unit, tl = _time_axis([p["t"] for p in rows])
        xlab = xl or tl

        def x_of(p: dict[str, Any], key: str = key, unit: float = unit) -> float | None:
            return p["trial"] if key == "by_index" else (None if p["t"] is None
                                                         else p["t"] / unit)

        done = [(x_of(p), p["value"], f"#{p['trial']} {p['trial_id']}: {fmt_num(p['value'])}")
                for p in rows if p["status"] == "completed" and x_of(p) is not None]
        cut = [(x_of(p), p["value"], f"#{p['trial']} stopped at {fmt_num(p['value'])}")
               for p in rows if p["status"] == "stopped" and x_of(p) is not None]
        best = [(x_of(p), p["best"]) for p in rows if x_of(p) is not None]
        charts.append(line_chart(
            [{"name": "best so far", "color": COLORS["best"], "kind": "step", "points": best,
              "width": 2.5},
             {"name": "completed", "color": COLORS["completed"], "kind": "dots", "points": done},
             {"name": "stopped (last value)", "color": COLORS["stopped"], "kind": "hollow",
              "points": cut}],
            title=f"Best {m} so far, by {'trial' if key == 'by_index' else 'time'}",
            xlabel=xlab, ylabel=m, integer_x=key == "by_index"))
        reg = [(x_of(p), p["regret"], f"#{p['trial']}: regret {fmt_num(p['regret'])}")
               for p in rows if x_of(p) is not None]
        charts.append(line_chart(
            [{"name": "regret", "color": COLORS["regret"], "kind": "step", "points": reg,
              "width": 2.5},
             {"name": "regret", "color": COLORS["regret"], "kind": "dots", "points": reg,
              "legend": False}],
            title=f"Regret (gap to the final best), by {'trial' if key == 'by_index' else 'time'}",
            xlabel=xlab, ylabel=f"|best so far - best| of {m}", integer_x=key == "by_index"))
    return '<div class="grid2">' + "".join(charts[i] for i in (0, 2, 1, 3)) + "</div>"


def _thin(points: Sequence[tuple[float, float]], n: int = 400) -> list[tuple[float, float]]:
    """At most about ``n`` points (every k-th, and the last): a curve of 100k steps must not
    make a page of megabytes."""
    k = max(1, math.ceil(len(points) / n))
    return list(points) if k == 1 else [*points[::k], points[-1]]


def _curves_chart(r: SweepReport) -> str:
    b = r.best_trial
    series, marks = [], []
    for t in r.trials:
        if not t.curve:
            continue
        color = COLORS.get(t.status, COLORS["running"])
        series.append({"name": t.status, "color": color, "kind": "line", "width": 1.4,
                       "opacity": 0.7, "points": _thin(t.curve), "legend": False,
                       "tooltip": f"#{t.index} {t.trial_id} ({t.status})"})
        if t.status == "stopped" and t.curve:
            s, v = t.curve[-1]
            marks.append((s, v, f"#{t.index} stopped at step {fmt_num(s)}"))
    if b is not None and b.curve:
        series.append({"name": f"best #{b.index}", "color": COLORS["best"], "kind": "line",
                       "width": 3, "points": _thin(b.curve), "tooltip": f"best: #{b.index}"})
    present = {t.status for t in r.trials if t.curve}
    legend = [{"name": k, "color": COLORS[k], "kind": "line", "points": [], "legend_only": True}
              for k in ("completed", "stopped", "failed") if k in present]
    return line_chart(legend + series, title=f"Learning curves of {r.metric} (x: stopped)",
                      xlabel="step", ylabel=r.metric, w=1000, h=320, markers=marks)


def render_html(r: SweepReport) -> str:
    """The report as one self-contained HTML page."""
    s, c, v = r.spec, r.compute, r.saved
    b = r.best_trial
    gen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.generated_at))
    kpis = [(fmt_num(b.final) if b else "–", f"best {r.metric} ({r.mode})"),
            (str(c["trials"]), ", ".join(f"{n} {k}" for k, n in c["by_status"].items())
             or "trials"),
            (fmt_duration(c["sweep_wall_s"]), "sweep wall clock"),
            (f"{c['cpu_hours']:.3g}", "CPU-hours" + (f" · {c['gpu_hours']:.3g} GPU-h"
                                                   if c["gpu_hours"] else "")),
            (f"{v['saved_fraction']:.0%}", f"points saved by stopping ({v['saved_points']})"),
            (str(len(r.overrides)), "supervisor overrides")]
    P = [(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
          f'content="width=device-width,initial-scale=1"><title>Sweep report: '
          f'{escape(r.objective)}</title><style>{CSS}</style></head><body><main>'),
         f"<header><h1>Sweep report: {escape(r.objective)}</h1><div class=\"sub\">agent "
         f"<code>{escape(r.agent_id)}</code> · project <code>{escape(r.project)}</code> · "
         f"{_badge(r.status)} · generated {gen}</div><div class=\"kpis\">"
         + "".join(f'<div class="kpi"><b>{escape(a)}</b><span>{escape(t)}</span></div>'
                   for a, t in kpis) + "</div>"]
    if b is not None:
        cfg = ", ".join(f"{k} = {fmt_num(b.config.get(k))}" for k in r.tunable)
        P.append(f"<p><b>Best configuration</b>: {escape(cfg or 'the fixed config')} "
                 f"(trial #{b.index}, run <code>{escape(b.trial_id)}</code>"
                 f"{' ' + escape(b.run_name) if b.run_name else ''}).</p>")
    P.append("<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("objective", "Objective"), ("best", "Best configs"), ("progress", "Progress"),
        ("importance", "Importance"), ("decisions", "Launches & stops"),
        ("overrides", "Overrides"), ("compute", "Compute"), ("saved", "Saved by stopping")))
        + "</nav></header>")
    P.append('<section id="objective"><h2>Objective</h2><div class="grid2"><div>'
             + _table(["setting", "value"], [f"<tr>{_td(k)}{_td(x)}</tr>" for k, x in settings_rows(r)])
             + "</div><div>" + _table(["parameter", "search space"], [
                 f"<tr>{_td(k)}{_td(describe_param(x))}</tr>"
                 for k, x in dict(s.get("space", {})).items()]) + "</div></div></section>")
    keys = r.tunable
    P.append(f'<section id="best"><h2>Best configurations (top {len(r.best)})</h2>' + (_table(
        ["rank", "trial", "run", r.metric, *keys, "wall", "chosen by"],
        [f'<tr class="{"best" if i == 1 else ""}">{_td(str(i), True)}{_td(f"#{t.index}")}'
         f"{_td(f'<code>{escape(t.trial_id)}</code> {escape(t.run_name)}', raw=True)}"
         f"{_td(t.final, True)}" + "".join(_td(t.config.get(k), True) for k in keys)
         + f"{_td(fmt_duration(t.wall_s), True)}{_td(t.method)}</tr>"
         for i, t in enumerate(r.best, 1)]) if r.best else
        '<p class="note">No trial has completed yet.</p>') + "</section>")
    P.append('<section id="progress"><h2>Progress: best so far and regret</h2>'
             '<p class="note">Only completed trials count towards the best; regret is the gap '
             "to the sweep's final best (the true optimum is unknown).</p>"
             + _progress_charts(r) + _curves_chart(r) + "</section>")
    P.append('<section id="importance"><h2>Parameter importance</h2>'
             + (bar_chart(list(r.importance.items()), title="fANOVA importance")
                if r.importance else "")
             + f'<p class="note">{escape(r.importance_note)}</p></section>')
    P.append(f'<section id="decisions"><h2>Launches ({len(r.launches)})</h2>' + _table(
        ["when", "trial", "config", "why", "outcome"],
        [f"<tr>{_td(fmt_when(x['t']))}{_td(_tn(x['index']))}{_td(x['config'])}"
         f"{_td(x['why'])}{_td(x['outcome'])}</tr>" for x in r.launches]))
    P.append(f"<h3>Early stops ({len(r.stops)})</h3>" + (_table(
        ["when", "trial", "rule", "at step", "value then", "cutoff / reference",
         "predicted final", "P(worse)", "why"],
        [f"<tr>{_td(fmt_when(x['t']))}{_td(_tn(x['index']))}{_td(x['rule'])}"
         f"{_td(x['step'], True)}{_td(x['value'], True)}{_td(x['reference'], True)}"
         f"{_td(x['predicted'], True)}"
         f"{_td(_pct(x['probability']), True)}"
         f"<td>{escape(x['message'])}<details><summary>evidence</summary><pre>"
         f"{escape(json.dumps(x['evidence'], indent=1, default=str))}</pre></details></td></tr>"
         for x in r.stops]) if r.stops else '<p class="note">No trial was stopped early.</p>'))
    if r.others:
        P.append("<h3>Other decisions</h3>" + _table(["when", "kind", "trial", "what"], [
            f"<tr>{_td(fmt_when(x['t']))}{_td(x['kind'])}{_td(x['trial'])}{_td(x['summary'])}"
            "</tr>" for x in r.others]))
    P.append("</section>")
    P.append(f'<section id="overrides"><h2>Supervisor overrides ({len(r.overrides)})</h2>' + (
        _table(["when", "actor", "action", "params", "reason", "status", "result"], [
            f"<tr>{_td(fmt_when(o['t']))}{_td(o['actor'])}{_td(o['action'])}{_td(o['params'])}"
            f"{_td(o['reason'])}{_td(_badge(o['status']), raw=True)}{_td(o['result'])}</tr>"
            for o in r.overrides]) if r.overrides else
        '<p class="note">Nobody overrode this agent.</p>') + "</section>")
    P.append('<section id="compute"><h2>Compute used</h2>'
             + _table(["measure", "value"], [f"<tr>{_td(k)}{_td(x)}</tr>"
                                             for k, x in compute_rows(c)]) + "</section>")
    used, saved = v["used_points"], v["saved_points"]
    tot = max(1, used + saved)
    bar = (f'<div class="bar"><div style="width:{100 * used / tot:.1f}%;background:'
           f'{COLORS["completed"]}">used {used}</div><div style="width:{100 * saved / tot:.1f}%;'
           f'background:{COLORS["stopped"]}">saved {saved}</div></div>' if saved else "")
    P.append('<section id="saved"><h2>Compute saved by early stopping</h2>'
             f"<p>{escape(v['headline'])}</p>{bar}" + (_table(
                 ["trial", "points run", "points saved", "time saved", "value then",
                  "projected final", "projection", "could beat best?"],
                 [f"<tr>{_td(_tn(x['index']))}{_td(x['points'], True)}"
                  f"{_td(x['saved_points'], True)}{_td(fmt_duration(x['saved_s']), True)}"
                  f"{_td(x['value'], True)}{_td(x['projection'], True)}{_td(x['how'])}"
                  f"{_td('yes' if x['beats_best'] else 'no')}</tr>" for x in v["stopped"]])
                 if v["stopped"] else "")
             + f"<p>{escape(v['regret_note'])}</p><p>{escape(v['replay_note'])}</p></section>")
    if r.notes:
        P.append("<section><h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>"
                                                      for n in r.notes) + "</ul></section>")
    P.append(f"<footer>assay sweep report · agent {escape(r.agent_id)} · {gen}</footer>"
             "</main></body></html>")
    return "\n".join(P)
