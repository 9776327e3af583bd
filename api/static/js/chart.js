// Line charts on uPlot: several series with their own steps, EMA smoothing, log scale,
// drag-to-zoom (with an optional fetch of full-resolution points for the zoomed range;
// double-click restores), a hover tooltip, live appends, and resizing with the container.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { h } from "./dom.js";
import { fmtNum, num } from "./format.js";

/** CSS custom property of the document (theme colours). */
function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

/** Exponential moving average with debiasing (as TensorBoard), skipping non-finite values. */
export function smooth(ys, w) {
  if (!w) return ys;
  const out = new Array(ys.length);
  let last = 0, n = 0;
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    if (y == null || !Number.isFinite(y)) { out[i] = null; continue; }
    last = last * w + (1 - w) * y;
    n++;
    out[i] = last / (1 - Math.pow(w, n));
  }
  return out;
}

/** Values from the API (numbers or "NaN"/"Infinity" strings) as numbers, non-finite as null. */
export function clean(values) {
  const out = new Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = typeof values[i] === "number" ? values[i] : num(values[i]);
    out[i] = Number.isFinite(v) ? v : null;
  }
  return out;
}

function tooltipPlugin(getLabels) {
  let tip;
  return {
    hooks: {
      init(u) {
        tip = h("div.chart-tip");
        u.over.appendChild(tip);
        u.over.addEventListener("mouseleave", () => { tip.style.display = "none"; });
      },
      setCursor(u) {
        const i = u.cursor.idx;
        if (i == null || u.cursor.left < 0) { tip.style.display = "none"; return; }
        const rows = [];
        const labels = getLabels();
        for (let s = 1; s < u.series.length; s++) {
          const ser = u.series[s];
          if (!ser.show || ser._raw) continue;
          const v = u.data[s][i];
          if (v == null) continue;
          rows.push([ser.label, v, ser._color]);
        }
        if (!rows.length) { tip.style.display = "none"; return; }
        rows.sort((a, b) => b[1] - a[1]);
        const more = rows.length > 8 ? rows.length - 8 : 0;
        tip.replaceChildren(...[
          h("div.tip-x", `${labels.x} ${fmtNum(u.data[0][i])}`),
          ...rows.slice(0, 8).map(([l, v, c]) => h("div.tip-row",
            h("span.swatch", { style: { background: c } }), h("span.tip-l", l), h("span.tip-v", fmtNum(v)))),
          more ? h("div.tip-more", `+${more} more`) : null].filter(Boolean));
        tip.style.display = "block";
        const left = u.cursor.left, w = u.over.clientWidth;
        tip.style.left = left > w / 2 ? "" : `${left + 12}px`;
        tip.style.right = left > w / 2 ? `${w - left + 12}px` : "";
        tip.style.top = "4px";
      },
    },
  };
}

/**
 * A line chart.
 * @param {HTMLElement} el container (its width is the chart's)
 * @param {object} o options
 * @param {Array<{label: string, color: string, x: number[], y: number[], width?: number, dash?: number[]}>} o.series
 * @param {number} [o.height] pixels
 * @param {boolean} [o.log] logarithmic y
 * @param {number} [o.smoothing] EMA weight in [0, 1)
 * @param {string} [o.xLabel] name of the x axis ("step")
 * @param {boolean} [o.integerX] only whole-number ticks on x (trial numbers)
 * @param {(lo: number, hi: number) => Promise<Array|null>} [o.onZoom] series for a zoomed range
 * @param {() => void} [o.onDraw] called after each draw
 */
export class LineChart {
  constructor(el, o) {
    this.el = el;
    this.o = { height: 220, log: false, smoothing: 0, xLabel: "step", ...o };
    this.series = o.series || [];
    this.full = null; // overview series while zoomed into detail
    this.zoomSeq = 0;
    this.pending = 0;
    this.u = null;
    this.ro = new ResizeObserver(() => this.resize());
    this.ro.observe(el);
    this.build();
  }

  /** The aligned uPlot data ([xs, ...ys]) and series options for the current settings. */
  data() {
    const w = this.o.smoothing;
    const log = this.o.log;
    const pos = (ys) => (log ? ys.map((v) => (v != null && v > 0 ? v : null)) : ys);
    const tables = [];
    const opts = [];
    for (const s of this.series) {
      const ys = pos(s.y);
      if (w > 0) {
        tables.push([s.x, ys]);
        opts.push({ label: s.label, stroke: fade(s.color), width: 1, _raw: true, _color: s.color, spanGaps: true });
        tables.push([s.x, smooth(ys, w)]);
        opts.push({ label: s.label, stroke: s.color, width: s.width || 1.5, dash: s.dash, _color: s.color, spanGaps: true });
      } else {
        tables.push([s.x, ys]);
        opts.push({ label: s.label, stroke: s.color, width: s.width || 1.5, dash: s.dash, _color: s.color, spanGaps: true });
      }
    }
    if (!tables.length) return { data: [[]], opts };
    if (tables.length === 1 || tables.every((t) => t[0] === tables[0][0])) {
      return { data: [tables[0][0], ...tables.map((t) => t[1])], opts };
    }
    return { data: uPlot.join(tables), opts };
  }

  build() {
    if (this.u) this.u.destroy();
    const { data, opts } = this.data();
    const axis = cssVar("--fg-muted", "#888");
    const grid = cssVar("--grid", "rgba(128,128,128,.15)");
    const font = "11px system-ui, sans-serif";
    const self = this;
    const ax = { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1, size: 4 }, font, size: 28 };
    const tick = (u, vals) => vals.map((v) => (v == null ? "" : fmtNum(v, 3)));
    const yax = { ...ax, size: 52, values: tick };
    const opt = {
      width: Math.max(200, this.el.clientWidth || 400),
      height: this.o.height,
      legend: { show: false },
      padding: [8, 10, 0, 0],
      cursor: {
        drag: { x: true, y: false, setScale: true },
        points: { size: 5 },
        bind: {
          dblclick: (u, targ, handler) => (e) => {
            if (e.button !== 0) return;
            if (self.full) self.unzoom();
            else handler(e);
          },
        },
      },
      scales: { x: { time: false }, y: this.o.log ? { distr: 3 } : { auto: true } },
      axes: [{ ...ax, values: tick,
        ...(this.o.integerX ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] } : {}) }, yax],
      series: [{ label: this.o.xLabel }, ...opts],
      plugins: [tooltipPlugin(() => ({ x: this.o.xLabel }))],
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 4 || !this.o.onZoom) return;
          const lo = u.posToVal(u.select.left, "x");
          const hi = u.posToVal(u.select.left + u.select.width, "x");
          this.zoomTo(lo, hi);
        }],
        draw: [() => this.o.onDraw && this.o.onDraw()],
      },
    };
    this.el.replaceChildren();
    this.u = new uPlot(opt, data, this.el);
  }

  async zoomTo(lo, hi) {
    const seq = ++this.zoomSeq;
    const detail = await this.o.onZoom(lo, hi).catch(() => null);
    if (!detail || seq !== this.zoomSeq || !this.u) return;
    if (!this.full) this.full = this.series;
    this.series = detail;
    const { data } = this.data();
    this.u.setData(data, false);
    this.u.setScale("x", { min: lo, max: hi });
  }

  unzoom() {
    this.zoomSeq++;
    if (this.full) {
      this.series = this.full;
      this.full = null;
    }
    const { data } = this.data();
    this.u.setData(data, true);
  }

  /** Replace all series (keeps settings). */
  setSeries(series) {
    const sameShape = series.length === this.series.length &&
      series.every((s, i) => s.label === this.series[i].label && s.color === this.series[i].color &&
        s.width === this.series[i].width);
    if (this.full) { this.full = series; return; }
    this.series = series;
    if (!sameShape) { this.build(); return; }
    this.u.setData(this.data().data, true);
  }

  /** Append points to series i (live); redraws at most once per animation frame. */
  append(i, xs, ys) {
    const target = this.full || this.series;
    const s = target[i];
    if (!s) return;
    const lastX = s.x.length ? s.x[s.x.length - 1] : -Infinity;
    const nx = s.x.slice(), ny = s.y.slice();
    for (let k = 0; k < xs.length; k++) {
      if (xs[k] > lastX) { nx.push(xs[k]); ny.push(ys[k]); }
    }
    target[i] = { ...s, x: nx, y: ny };
    if (this.full) return;
    if (!this.pending) {
      this.pending = requestAnimationFrame(() => {
        this.pending = 0;
        if (this.u) this.u.setData(this.data().data, true);
      });
    }
  }

  /**
   * Drop the points of series i at x >= fromX, in the overview and in a zoomed detail alike
   * (a rewound run: the stream's "rewind" event supersedes its dead attempt's tail).
   */
  truncate(i, fromX) {
    let changed = false;
    for (const target of [this.full, this.series]) {
      const s = target && target[i];
      if (!s) continue;
      const cut = cutFrom(s, fromX);
      if (cut === s) continue;
      target[i] = cut;
      changed = true;
    }
    if (changed && this.u) this.u.setData(this.data().data, !this.full);
  }

  /** Change log scale / smoothing (rebuilds). */
  configure(o) {
    Object.assign(this.o, o);
    this.build();
  }

  resize() {
    if (!this.u) return;
    const w = this.el.clientWidth;
    if (w > 0 && Math.abs(w - this.u.width) > 1) this.u.setSize({ width: w, height: this.o.height });
  }

  destroy() {
    this.ro.disconnect();
    if (this.pending) cancelAnimationFrame(this.pending);
    if (this.u) this.u.destroy();
    this.u = null;
  }
}

/** Series s ({x, y, ...}) without its points at x >= fromX; s itself when it has none. */
export function cutFrom(s, fromX) {
  if (!s.x.some((x) => x >= fromX)) return s;
  const x = [], y = [];
  s.x.forEach((v, k) => { if (v < fromX) { x.push(v); y.push(s.y[k]); } });
  return { ...s, x, y };
}

function fade(c) {
  if (c.startsWith("#") && c.length === 7) return c + "40";
  if (c.startsWith("hsl(")) return c.replace(")", " / 0.25)");
  return c;
}
