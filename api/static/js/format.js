// Formatting of numbers, times and small shared widgets (status pills, key/value tables).
import { h } from "./dom.js";

/** The API writes non-finite floats as strings; turn them into numbers (NaN, ±Infinity). */
export function num(v) {
  if (typeof v === "number") return v;
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  return v == null ? null : Number(v);
}

/** A compact number: 3-4 significant digits, exponent for very small or large values. */
export function fmtNum(v, digits = 4) {
  v = num(v);
  if (v == null || typeof v !== "number") return v == null ? "–" : String(v);
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "-∞";
  if (Number.isInteger(v) && Math.abs(v) < 1e7) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e7)) return v.toExponential(Math.max(1, digits - 2));
  return String(Number(v.toPrecision(digits)));
}

/** A value of any JSON type, shortly. */
export function fmtValue(v) {
  if (v == null) return "–";
  if (typeof v === "number" || v === "NaN" || v === "Infinity" || v === "-Infinity") return fmtNum(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** "3m 20s", "2h 05m", "4d 3h". */
export function fmtDuration(s) {
  if (s == null || !Number.isFinite(s)) return "–";
  s = Math.max(0, s);
  // Rounded to the unit shown first, then split: 719.6 s is "12m 00s", never "11m 60s".
  const ms = Math.round(s * 1000);
  if (ms < 1000) return `${ms} ms`;
  const sec = Math.round(s);
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${String(sec % 60).padStart(2, "0")}s`;
  const min = Math.round(s / 60);
  if (min < 1440) return `${Math.floor(min / 60)}h ${String(min % 60).padStart(2, "0")}m`;
  const hr = Math.round(s / 3600);
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

/** Epoch seconds of a time given as epoch seconds or an ISO 8601 string (audit entries). */
export function toSec(ts) {
  if (typeof ts === "string") {
    const ms = Date.parse(ts);
    return Number.isNaN(ms) ? null : ms / 1000;
  }
  return ts;
}

/** "12 s ago", "5 min ago", "3 h ago", else a date. */
export function fmtAgo(ts, now = Date.now() / 1000) {
  ts = toSec(ts);
  if (!ts) return "–";
  const d = now - ts;
  if (d < 0) return "just now";
  // Rounded first, then the unit chosen: 59.6 s ago is "1 min ago", never "60 s ago".
  if (Math.round(d) < 60) return `${Math.round(d)} s ago`;
  if (Math.round(d / 60) < 60) return `${Math.round(d / 60)} min ago`;
  if (Math.round(d / 3600) < 24) return `${Math.round(d / 3600)} h ago`;
  return fmtTime(ts).slice(0, 10);
}

/** Local "YYYY-MM-DD HH:MM:SS". */
export function fmtTime(ts) {
  ts = toSec(ts);
  if (!ts) return "–";
  const d = new Date(ts * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Bytes in KiB/MiB/GiB. */
export function fmtBytes(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}

/** A time element: relative text, absolute time on hover (kept current by refreshAgo). */
export function ago(ts) {
  return h("span.ago", { title: fmtTime(ts), dataset: { ts: String(ts || "") } }, fmtAgo(ts));
}

/**
 * Re-word every ago() element under root for the current time, in place (lists that are
 * redrawn only when their content changes would otherwise say "2 min ago" for an hour).
 * main.js calls it every few seconds; data-ts holds epoch seconds or an ISO 8601 time.
 */
export function refreshAgo(root = document, now = Date.now() / 1000) {
  for (const el of root.querySelectorAll(".ago[data-ts]")) {
    const raw = el.dataset.ts;
    if (!raw) continue;
    const text = fmtAgo(/^-?[\d.]+(e[+-]?\d+)?$/i.test(raw) ? Number(raw) : raw, now);
    if (el.textContent !== text) el.textContent = text;
  }
}

/** A coloured status pill (run, agent, override and decision states). */
export function pill(status, extra = "") {
  const s = String(status || "unknown");
  return h(`span.pill.s-${s.replace(/[^a-z_]/gi, "")}`, { title: extra || s }, s);
}

/** A progress bar for used/limit (null limit: unlimited). */
export function bar(used, limit, label) {
  const frac = limit ? Math.min(1, used / limit) : 0;
  const cls = frac >= 1 ? ".full" : frac >= 0.8 ? ".high" : "";
  return h("div.bar" + cls, { title: label || "" },
    h("div.bar-fill", { style: { width: `${(frac * 100).toFixed(1)}%` } }));
}

/** Flatten nested objects into dotted keys. */
export function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) flatten(v, `${prefix}${k}.`, out);
    else out[prefix + k] = v;
  }
  return out;
}

/** A two-column key/value table of a (flattened) object. */
export function kvTable(obj, { empty = "nothing recorded", filter = "" } = {}) {
  const rows = Object.entries(flatten(obj)).filter(([k, v]) =>
    !filter || k.toLowerCase().includes(filter) || fmtValue(v).toLowerCase().includes(filter));
  if (!rows.length) return h("p.muted", empty);
  return h("table.kv", h("tbody", rows.map(([k, v]) =>
    h("tr", h("th", { title: k }, k), h("td", { title: fmtValue(v) }, fmtValue(v))))));
}

/** A colour per series index (colour-blind friendly first eight, then hue rotation). */
export function color(i) {
  const base = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7",
    "#9c755f", "#86bcb6"];
  if (i < base.length) return base[i];
  return `hsl(${(i * 137.508) % 360} 60% 55%)`;
}

/** Viridis-like colour for t in [0, 1]. */
export function ramp(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  if (!Number.isFinite(t)) return "#888";
  t = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t));
  const f = t - i;
  const c = stops[i].map((a, j) => Math.round(a + (stops[i + 1][j] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
