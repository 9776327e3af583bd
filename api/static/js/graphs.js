// SVG drawings of our own: the lineage graph (runs and artifact versions, upstream on the
// left) and parallel coordinates (config against a metric).
import { h } from "./dom.js";
import { fmtNum, fmtValue } from "./format.js";

const NODE_W = 196, NODE_H = 40, COL_GAP = 64, ROW_GAP = 10, MAX_PER_COL = 24;

/**
 * The lineage graph of GET /api/lineage.
 * @param {{root: string, nodes: object[], edges: object[], truncated: boolean}} g
 * @returns {SVGElement}
 */
export function lineageGraph(g) {
  const cols = new Map();
  for (const n of g.nodes) {
    if (!cols.has(n.depth)) cols.set(n.depth, []);
    cols.get(n.depth).push(n);
  }
  const depths = [...cols.keys()].sort((a, b) => a - b);
  // One barycentre pass outward from the root keeps connected nodes near each other.
  const pos = new Map();
  const nbrs = new Map();
  for (const e of g.edges) {
    (nbrs.get(e.src) || nbrs.set(e.src, []).get(e.src)).push(e.dst);
    (nbrs.get(e.dst) || nbrs.set(e.dst, []).get(e.dst)).push(e.src);
  }
  const order = [0, ...depths.filter((d) => d > 0), ...depths.filter((d) => d < 0).reverse()];
  const shown = new Map();
  for (const d of order) {
    const col = cols.get(d);
    if (!col) continue;
    const bc = (n) => {
      const ys = (nbrs.get(n.id) || []).map((m) => pos.get(m)).filter((y) => y != null);
      return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : 1e9;
    };
    col.sort((a, b) => bc(a) - bc(b) || a.id.localeCompare(b.id));
    const keep = col.slice(0, MAX_PER_COL);
    keep.forEach((n, i) => pos.set(n.id, i));
    shown.set(d, { keep, more: col.length - keep.length });
  }
  const maxRows = Math.max(...[...shown.values()].map((c) => c.keep.length + (c.more ? 1 : 0)), 1);
  const height = maxRows * (NODE_H + ROW_GAP) + 24;
  const width = depths.length * (NODE_W + COL_GAP) - COL_GAP + 20;
  const xy = new Map();
  depths.forEach((d, ci) => {
    const c = shown.get(d);
    const rows = c.keep.length + (c.more ? 1 : 0);
    const top = (height - rows * (NODE_H + ROW_GAP)) / 2;
    c.keep.forEach((n, i) => xy.set(n.id, [10 + ci * (NODE_W + COL_GAP), top + i * (NODE_H + ROW_GAP)]));
    c.moreAt = [10 + ci * (NODE_W + COL_GAP), top + c.keep.length * (NODE_H + ROW_GAP)];
  });
  const svg = h("svg.graph.lineage", { viewBox: `0 0 ${width} ${height}`, width, height,
    style: { maxWidth: `${width}px` }, role: "img", "aria-label": "lineage graph" });
  for (const e of g.edges) {
    const a = xy.get(e.src), b = xy.get(e.dst);
    if (!a || !b) continue;
    const [x1, y1] = [a[0] + NODE_W, a[1] + NODE_H / 2];
    const [x2, y2] = [b[0], b[1] + NODE_H / 2];
    const mx = (x1 + x2) / 2;
    svg.append(h("path.edge", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 4},${y2}` },
      h("title", `${e.src} ${e.kind} → ${e.dst}`)));
    svg.append(h("path.edge", { d: `M${x2 - 8},${y2 - 4} L${x2 - 2},${y2} L${x2 - 8},${y2 + 4}` }));
  }
  for (const n of g.nodes) {
    const p = xy.get(n.id);
    if (!p) continue;
    // A deleted artifact version keeps its place in the lineage but has no page to open.
    const gone = n.kind !== "run" && n.deleted === true;
    const href = n.kind === "run" ? `#/runs/${encodeURIComponent(n.run_id)}`
      : `#/artifacts/${encodeURIComponent(n.name)}/v${n.version}`;
    const label = trunc(n.label || n.id, 26);
    const sub = n.kind === "run" ? `run · ${n.status || "?"} · ${n.project || ""}`
      : `${gone ? "deleted · " : ""}${n.type || "artifact"} · v${n.version}`;
    const open = gone ? {} : { tabindex: 0, onclick: () => { location.hash = href; },
      onkeydown: (ev) => { if (ev.key === "Enter") location.hash = href; } };
    const node = h(`g.node.${n.kind}${n.id === g.root ? ".root" : ""}${gone ? ".deleted" : ""}`, { transform: `translate(${p[0]},${p[1]})`, ...open },
    h("title", gone ? `${n.id} (deleted)` : n.id), h("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
    h("text", { x: 10, y: 16 }, label), h("text.sub", { x: 10, y: 31 }, trunc(sub, 32)));
    svg.append(node);
  }
  for (const [, c] of shown) {
    if (c.more) svg.append(h("text.sub", { x: c.moreAt[0] + 10, y: c.moreAt[1] + 20 }, `+${c.more} more`));
  }
  return svg;
}

function trunc(s, n) {
  s = String(s);
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

/**
 * Parallel coordinates.
 * @param {Array<{key: string, label: string}>} axes numeric or categorical (detected)
 * @param {Array<{id: string, color: string, values: object}>} rows
 * @param {{width?: number, height?: number, onHover?: (id: string|null) => void}} [o]
 * @returns {{el: SVGElement, highlight: (id: string|null) => void}}
 */
export function parallelCoordinates(axes, rows, o = {}) {
  const width = o.width || 900, height = o.height || 260;
  const pad = { l: 40, r: 60, t: 34, b: 22 };
  const innerH = height - pad.t - pad.b;
  const step = axes.length > 1 ? (width - pad.l - pad.r) / (axes.length - 1) : 0;
  const scales = axes.map((a) => {
    const vals = rows.map((r) => r.values[a.key]).filter((v) => v != null && v !== "");
    const nums = vals.map(Number).filter(Number.isFinite);
    if (vals.length && nums.length === vals.length) {
      let lo = Math.min(...nums), hi = Math.max(...nums);
      const log = lo > 0 && hi / lo > 100;
      const f = log ? Math.log10 : (x) => x;
      if (lo === hi) { lo -= 1; hi += 1; }
      const [flo, fhi] = [f(lo), f(hi)];
      return { y: (v) => (v == null || !Number.isFinite(Number(v))) ? null : pad.t + innerH * (1 - (f(Number(v)) - flo) / (fhi - flo)),
        ticks: [[hi, pad.t], [lo, pad.t + innerH]].map(([v, y]) => [fmtNum(v, 3), y]), log };
    }
    const cats = [...new Set(vals.map(fmtValue))].sort();
    const y = (v) => {
      if (v == null) return null;
      const i = cats.indexOf(fmtValue(v));
      return cats.length === 1 ? pad.t + innerH / 2 : pad.t + innerH * (i / (cats.length - 1));
    };
    return { y, ticks: cats.slice(0, 12).map((c) => [c, y(c)]) };
  });
  const svg = h("svg.parcoords", { viewBox: `0 0 ${width} ${height}`, width: "100%", height, role: "img",
    "aria-label": "parallel coordinates of config against the metric" });
  const lines = new Map();
  for (const r of rows) {
    const pts = [];
    axes.forEach((a, i) => {
      const y = scales[i].y(r.values[a.key]);
      if (y != null) pts.push(`${pad.l + i * step},${y.toFixed(1)}`);
    });
    const line = h("polyline.pc-line", { points: pts.join(" "), stroke: r.color,
      onmouseenter: () => { highlight(r.id); o.onHover && o.onHover(r.id); },
      onmouseleave: () => { highlight(null); o.onHover && o.onHover(null); } }, h("title", r.label || r.id));
    lines.set(r.id, line);
    svg.append(line);
  }
  axes.forEach((a, i) => {
    const x = pad.l + i * step;
    const g = h("g.axis", h("line", { x1: x, x2: x, y1: pad.t, y2: pad.t + innerH }),
      h("text.name", { x, y: 14, "text-anchor": "middle" }, trunc(a.label, 22) + (scales[i].log ? " (log)" : "")));
    for (const [t, y] of scales[i].ticks) {
      g.append(h("text", { x: x + 5, y: y + 4 }, trunc(t, 14)));
    }
    svg.append(g);
  });
  function highlight(id) {
    svg.classList.toggle("dim", id != null);
    for (const [k, l] of lines) l.classList.toggle("hi", k === id);
  }
  return { el: svg, highlight };
}
