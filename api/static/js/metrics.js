// A grid of one chart per metric key of a run: downsampled history (never every point of a
// million-point curve), full resolution when zoomed in, live appends from the stream.
import { api, qs } from "./api.js";
import { MAX_POINTS, historyPath, methodFor } from "./paths.js";
import { LineChart, clean } from "./chart.js";
import { debounce, h, mount } from "./dom.js";
import { color, fmtNum, num } from "./format.js";


/**
 * Charts of a run's keys.
 * @param {HTMLElement} el container
 * @param {string} runId
 * @param {string[]} keys
 * @param {{height?: number, smoothing?: number, log?: boolean, maxPoints?: number, signal?: AbortSignal,
 *          colorOf?: (key: string, i: number) => string, onFirstDraw?: () => void,
 *          t0?: number, groupOf?: (key: string) => string, steps?: object, series?: object}} o
 *   t0: plot against seconds since t0 (system metrics) instead of steps
 *   groupOf: a heading whenever it changes between consecutive keys
 *   steps: the run's summary statistics (their last step estimates each curve's length)
 *   series: curves already read (a history response's series), instead of asking again
 */
export class MetricGrid {
  constructor(el, runId, keys, o = {}) {
    this.el = el;
    this.runId = runId;
    this.keys = keys;
    this.o = { height: 200, smoothing: 0, log: false, maxPoints: MAX_POINTS, ...o };
    this.charts = new Map();
    this.meta = new Map();
    this.totals = new Map();
    this.cards = new Map();
    this.filter = "";
    this.refetch = new Map();
    this.nonFinite = new Map(); // key -> Map(x -> NaN | ±Infinity): what clean() made gaps
  }

  async load() {
    if (!this.keys.length) {
      mount(this.el, h("p.empty", "No metrics logged yet."));
      return;
    }
    const res = this.o.series ? { series: this.o.series }
      : await api(historyPath(this.runId, this.keys, this.o.steps, this.o.maxPoints), { signal: this.o.signal });
    mount(this.el);
    let drawn = false;
    let group = null;
    this.keys.forEach((k, i) => {
      const s = res.series[k] || { step: [], value: [], time: [], total: 0 };
      if (this.o.groupOf && this.o.groupOf(k) !== group) {
        group = this.o.groupOf(k);
        this.el.append(h("h3", { style: { gridColumn: "1 / -1", margin: "4px 0 -4px" } }, group));
      }
      const chartEl = h("div.chart");
      const meta = h("span.meta");
      const card = h("div.chart-card", { dataset: { key: k } }, h("div.chart-title", h("span", k), meta), chartEl);
      this.el.append(card);
      this.cards.set(k, card);
      this.meta.set(k, meta);
      this.totals.set(k, s.total);
      const c = (this.o.colorOf || ((key, j) => color(j % 10)))(k, i);
      const chart = new LineChart(chartEl, {
        series: [{ label: k, color: c, x: this.xs(s), y: clean(s.value) }],
        height: this.o.height, smoothing: this.o.smoothing, log: this.o.log,
        xLabel: this.o.t0 != null ? "s" : "step",
        onZoom: this.o.t0 != null ? null : (lo, hi) => this.detail(k, c, lo, hi),
        onDraw: () => {
          if (!drawn && this.o.onFirstDraw) { drawn = true; this.o.onFirstDraw(); }
        },
      });
      this.charts.set(k, chart);
      this.keepNonFinite(k, this.xs(s), s.value, true);
      this.describe(k);
    });
    this.applyFilter();
  }

  /** The x values of a history or stream chunk: steps, or seconds since t0. */
  xs(s) {
    const t0 = this.o.t0;
    return t0 != null ? s.time.map((t) => t - t0) : s.step;
  }

  /**
   * Remember the x of each NaN / ±inf value (the chart holds a gap there), so the card can
   * say "last NaN" as the runs table does; reset: the values replace all the key's points.
   */
  keepNonFinite(k, xs, values, reset = false) {
    let m = this.nonFinite.get(k);
    if (!m || reset) this.nonFinite.set(k, (m = new Map()));
    for (let i = 0; i < xs.length; i++) {
      const v = num(values[i]);
      if (typeof v === "number" && !Number.isFinite(v)) m.set(xs[i], v);
      else m.delete(xs[i]);
    }
  }

  describe(k) {
    const chart = this.charts.get(k);
    const s = (chart.full || chart.series)[0];
    let last = s.y.length ? s.y[s.y.length - 1] : null;
    if (last == null && s.x.length) {
      const nf = this.nonFinite.get(k);
      if (nf && nf.has(s.x[s.x.length - 1])) last = nf.get(s.x[s.x.length - 1]);
    }
    // The run's distinct points; "shown" only when the chart holds fewer (downsampled).
    const total = Math.max(this.totals.get(k) || 0, s.x.length);
    const card = this.cards.get(k);
    card.dataset.points = String(s.x.length); // what the chart holds (tests read it)
    card.dataset.last = String(s.x.length ? s.x[s.x.length - 1] : "");
    this.meta.get(k).textContent = `${fmtNum(total)} pts${total > s.x.length ? ` (${fmtNum(s.x.length)} shown)` : ""} · last ${fmtNum(last)}`;
  }

  async detail(k, c, lo, hi) {
    const res = await api(`/api/runs/${encodeURIComponent(this.runId)}/history${qs({ key: k, max_points: this.o.maxPoints,
      step_min: Math.max(0, Math.floor(lo)), step_max: Math.max(0, Math.ceil(hi)), method: methodFor(hi - lo) })}`, { signal: this.o.signal });
    const s = res.series[k];
    if (!s) return null;
    return [{ label: k, color: c, x: s.step, y: clean(s.value) }];
  }

  /** Append stream points {key: {step, value}}; returns keys that have no chart yet. */
  append(points) {
    const missing = [];
    for (const [k, p] of Object.entries(points)) {
      const chart = this.charts.get(k);
      if (!chart) { missing.push(k); continue; }
      const before = (chart.full || chart.series)[0];
      const lastX = before.x.length ? before.x[before.x.length - 1] : -Infinity;
      const xs = this.xs(p);
      chart.append(0, xs, clean(p.value));
      const after = (chart.full || chart.series)[0];
      const fresh = xs.map((x, i) => [x, p.value[i]]).filter(([x]) => x > lastX); // as the chart keeps
      this.keepNonFinite(k, fresh.map((e) => e[0]), fresh.map((e) => e[1]));
      // Only the points the chart took are new: the stream resends points already held
      // (it resumes a little before what the history read holds), and those count once.
      this.totals.set(k, Math.max(this.totals.get(k) || 0, before.x.length) + (after.x.length - before.x.length));
      this.describe(k);
      const n = (chart.full || chart.series)[0].x.length;
      if (n > this.o.maxPoints * 4) this.scheduleRefetch(k);
    }
    return missing;
  }

  /**
   * The run was rewound (the stream's "rewind" event): drop every chart's points at steps
   * >= fromStep, before the new attempt's points are appended. Grids of system metrics
   * (against time) keep theirs: those are never rewound.
   */
  rewind(fromStep) {
    if (this.o.t0 != null) return;
    for (const [k, chart] of this.charts) {
      const before = (chart.full || chart.series)[0].x.length;
      chart.truncate(0, fromStep);
      const nf = this.nonFinite.get(k);
      if (nf) for (const x of [...nf.keys()]) if (x >= fromStep) nf.delete(x);
      const after = (chart.full || chart.series)[0].x.length;
      if (after === before) continue;
      const total = this.totals.get(k) || before;
      this.totals.set(k, Math.max(after, total - (before - after)));
      if (total > before) this.scheduleRefetch(k); // downsampled: the server counts what is left
      this.describe(k);
    }
  }

  /** A long-running live curve is re-read downsampled now and then (bounded memory). */
  scheduleRefetch(k) {
    if (this.refetch.has(k)) return;
    this.refetch.set(k, true);
    setTimeout(async () => {
      try {
        const res = await api(`/api/runs/${encodeURIComponent(this.runId)}/history${qs({ key: k, max_points: this.o.maxPoints,
          method: methodFor(this.totals.get(k) || 0) })}`, { signal: this.o.signal });
        const s = res.series[k];
        const chart = this.charts.get(k);
        if (s && chart) {
          const cur = (chart.full || chart.series)[0];
          chart.setSeries([{ ...cur, x: this.xs(s), y: clean(s.value) }]);
          this.keepNonFinite(k, this.xs(s), s.value, true);
          this.totals.set(k, s.total);
          this.describe(k);
        }
      } catch { /* next time */ }
      this.refetch.delete(k);
    }, 2000);
  }

  configure(o) {
    Object.assign(this.o, o);
    for (const c of this.charts.values()) c.configure({ smoothing: this.o.smoothing, log: this.o.log });
  }

  setFilter(f) {
    this.filter = f.toLowerCase();
    this.applyFilter();
  }

  applyFilter() {
    for (const [k, card] of this.cards) card.hidden = !!this.filter && !k.toLowerCase().includes(this.filter);
  }

  destroy() {
    for (const c of this.charts.values()) c.destroy();
    this.charts.clear();
  }
}

/** Chart toolbar: key filter, smoothing and log scale; calls onChange({filter, smoothing, log}). */
export function chartToolbar(onChange, init = {}) {
  const st = { filter: "", smoothing: init.smoothing ?? 0, log: !!init.log };
  const filter = h("input", { type: "search", placeholder: "filter keys…  ( / )", "data-filter": "" });
  const out = h("span.mono", st.smoothing.toFixed(2));
  const range = h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: st.smoothing, title: "EMA smoothing" });
  const log = h("input", { type: "checkbox", checked: st.log });
  filter.addEventListener("input", debounce(() => { st.filter = filter.value.trim(); onChange({ ...st }, "filter"); }, 150));
  range.addEventListener("input", () => { out.textContent = Number(range.value).toFixed(2); });
  range.addEventListener("change", () => { st.smoothing = Number(range.value); onChange({ ...st }, "smoothing"); });
  log.addEventListener("change", () => { st.log = log.checked; onChange({ ...st }, "log"); });
  const el = h("div.toolbar", filter, h("label", "smoothing", range, out), h("label", log, "log scale ", h("kbd", "l")),
    h("span.kbd-hint", "drag to zoom (full resolution) · double-click to reset"));
  return {
    el,
    toggleLog() { log.checked = !log.checked; log.dispatchEvent(new Event("change")); },
  };
}
