// Compare runs: one metric's curves overlaid (uPlot), a sortable table of what differs,
// and parallel coordinates of config against the metric.
import { ApiError, api, qs } from "../api.js";
import { LineChart, clean } from "../chart.js";
import { h, mount } from "../dom.js";
import { color, flatten, fmtNum, fmtValue, pill, ramp } from "../format.js";
import { parallelCoordinates } from "../graphs.js";
import { rankKeys, trialMetrics } from "../keys.js";
import { cursorFor, follow } from "../live.js";
import { chartToolbar } from "../metrics.js";
import { replaceQuery } from "../router.js";
import { saveSelected, selected } from "../session.js";
import { empty } from "../ui.js";

const MAX_RUNS = 40;

/** Render the compare page. */
export async function comparePage(ctx) {
  let ids = (ctx.route.query.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean);
  if (!ids.length) {
    const sel = [...selected()];
    mount(ctx.root, h("div.page-head", h("h1", "Compare")),
      h("div.panel", h("p", "Choose runs on the ", h("a", { href: "#/runs" }, "Runs"), " page (", h("kbd", "x"), " selects, ", h("kbd", "c"), " compares)."),
        sel.length ? h("p", h("a.btn.primary", { href: `#/compare?ids=${sel.join(",")}` }, `Compare the ${sel.length} selected run${sel.length === 1 ? "" : "s"}`)) : null));
    return;
  }
  ids = [...new Set(ids)].slice(0, MAX_RUNS);
  const keyAsked = ctx.route.query.get("key");
  // The metric of the objective the runs are trials of (when an agent launched them).
  const objective = keyAsked ? Promise.resolve([]) : trialMetrics(ids, ctx.signal);
  const got = await Promise.all(ids.map((id) => api(`/api/runs/${encodeURIComponent(id)}`, { signal: ctx.signal })
    .catch((e) => { if (e.status === 404 || e.status === 400) return { missing: id, error: e.error }; throw e; })));
  const runs = got.filter((r) => !r.missing);
  const missing = got.filter((r) => r.missing);
  if (!runs.length) {
    throw new ApiError(404, `none of these runs exist: ${ids.join(", ")}`, missing[0]?.error || "pick runs on the Runs page");
  }
  runs.forEach((r, i) => { r._color = color(i); });

  const counts = new Map();
  for (const r of runs) for (const k of Object.keys(r.summary_stats || {})) if (!k.startsWith("sys/")) counts.set(k, (counts.get(k) || 0) + 1);
  // Shared by the most runs first; the objective's metric before all, counters (epoch,
  // step) after the other metrics.
  const keys = rankKeys([...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || a.localeCompare(b)), await objective);
  let key = keyAsked || keys[0] || "";
  const st = { smoothing: Number(ctx.route.query.get("smooth") || 0), log: ctx.route.query.get("log") === "1" };

  const keySel = h("select", { title: "metric" }, keys.map((k) => h("option", { value: k, selected: k === key }, k)));
  const chartBox = h("div.chart");
  const pcBox = h("div");
  const tableBox = h("div.table-wrap");
  let chart = null;
  ctx.onDispose(() => chart && chart.destroy());
  const toolbar = chartToolbar((s, what) => {
    if (what === "filter") return;
    st.smoothing = s.smoothing; st.log = s.log;
    save();
    chart && chart.configure(st);
  }, st);
  toolbar.el.querySelector("input[type=search]").remove();
  toolbar.el.prepend(h("label", "metric", keySel));
  mount(ctx.root,
    h("div.page-head", h("h1", "Compare"), h("span.muted", `${runs.length} runs`),
      h("div.actions", h("a.btn", { href: "#/runs", title: "pick more runs (x selects, c compares)",
        onclick: () => saveSelected(new Set(runs.map((r) => r.run_id))) }, "+ add runs"))),
    missing.length ? h("div.panel", { style: { borderLeft: "3px solid var(--warn)", marginBottom: "12px" } },
      `Not found: ${missing.map((m) => m.missing).join(", ")}`) : null,
    h("div.chart-card", toolbar.el, chartBox, h("div.legend", runs.map((r) => h("span", h("span.swatch", { style: { background: r._color } }),
      h("a", { href: `#/runs/${r.run_id}` }, r.name || r.run_id))))),
    h("div.panel", { style: { margin: "12px 0" } }, h("h2", "Config against", h("span#pc-key", key), h("span.right.muted", "parallel coordinates · hover a line")), pcBox),
    h("div.panel", h("h2", "Runs", h("span.right.muted", "click a header to sort")), tableBox));

  function save() {
    replaceQuery({ ids: runs.map((r) => r.run_id), key, smooth: st.smoothing || "", log: st.log ? "1" : "" });
  }

  const hist = new Map();
  async function loadChart() {
    await Promise.all(runs.map(async (r) => {
      const res = await api(`/api/runs/${encodeURIComponent(r.run_id)}/history${qs({ key, max_points: 1000 })}`, { signal: ctx.signal });
      const s = res.series[key] || { step: [], value: [] };
      hist.set(r.run_id, { x: s.step, y: clean(s.value) });
    }));
    const series = runs.map((r) => ({ label: r.name || r.run_id, color: r._color, ...hist.get(r.run_id) }));
    if (chart) chart.destroy();
    chart = new LineChart(chartBox, { series, height: 300, ...st, onDraw: () => { if (!drawn) { drawn = true; performance.mark("assay:compare-rendered"); } } });
  }
  let drawn = false;

  // Table: config keys that differ between the runs, then summary metrics.
  const flat = runs.map((r) => flatten(r.config));
  const cfgKeys = [...new Set(flat.flatMap((c) => Object.keys(c)))].sort();
  const varying = cfgKeys.filter((k) => new Set(flat.map((c) => JSON.stringify(c[k] ?? null))).size > 1);
  const shownCfg = varying.length ? varying : cfgKeys.slice(0, 6);
  let sort = { col: "metric", desc: true };
  let hi = null;

  function cell(r, i, col) {
    if (col === "metric") return r.summary[key];
    if (col.startsWith("c:")) return flat[i][col.slice(2)];
    if (col.startsWith("s:")) return r.summary[col.slice(2)];
    return r[col];
  }

  function drawTable() {
    const metricCols = [key, ...keys.filter((k) => k !== key).slice(0, 5)];
    const cols = [["name", "Run"], ["status", "Status"], ...shownCfg.map((k) => [`c:${k}`, k]),
      ...metricCols.map((k, j) => [j === 0 ? "metric" : `s:${k}`, k])];
    const order = runs.map((r, i) => i).sort((x, y) => {
      const a = cell(runs[x], x, sort.col), b = cell(runs[y], y, sort.col);
      const na = typeof a === "number", nb = typeof b === "number";
      const c = a == null ? 1 : b == null ? -1 : na && nb ? a - b : String(a).localeCompare(String(b));
      return (a == null || b == null) ? c : sort.desc ? -c : c;
    });
    mount(tableBox, h("table.data",
      h("thead", h("tr", cols.map(([c, label]) => h("th.sortable" + (sort.col === c ? ".sorted" : "") + (sort.col === c && !sort.desc ? ".asc" : ""),
        { onclick: () => { sort = sort.col === c ? { col: c, desc: !sort.desc } : { col: c, desc: true }; drawTable(); } },
        c.startsWith("c:") ? h("span.muted", "config ") : c.startsWith("s:") || c === "metric" ? h("span.muted", "") : null, label)), h("th", ""))),
      h("tbody", order.map((i) => {
        const r = runs[i];
        return h("tr" + (hi === r.run_id ? ".cursor" : ""), { dataset: { key: r.run_id },
          onmouseenter: () => pc && pc.highlight(r.run_id), onmouseleave: () => pc && pc.highlight(null) },
        ...cols.map(([c]) => {
          if (c === "name") return h("td", h("span.swatch", { style: { background: r._color, marginRight: "6px" } }), h("a", { href: `#/runs/${r.run_id}` }, r.name || r.run_id));
          if (c === "status") return h("td", pill(r.status));
          const v = cell(r, i, c);
          return h(typeof v === "number" ? "td.num" : "td", fmtValue(v));
        }),
        h("td", h("button.btn.small", { type: "button", title: "remove from comparison", onclick: () => {
          location.hash = `#/compare?ids=${runs.filter((x) => x !== r).map((x) => x.run_id).join(",")}&key=${encodeURIComponent(key)}`;
        } }, "×")));
      }))));
  }

  let pc = null;
  function drawPC() {
    const axes = [...shownCfg.slice(0, 10).map((k) => ({ key: `c:${k}`, label: k })), { key: "metric", label: key }];
    const vals = runs.map((r) => r.summary[key]).filter((v) => typeof v === "number");
    const lo = Math.min(...vals), hiV = Math.max(...vals);
    const rows = runs.map((r, i) => ({ id: r.run_id, label: `${r.name || r.run_id}: ${key}=${fmtValue(r.summary[key])}`,
      color: typeof r.summary[key] === "number" && hiV > lo ? ramp((r.summary[key] - lo) / (hiV - lo)) : r._color,
      values: Object.fromEntries(axes.map((a) => [a.key, cell(r, i, a.key)])) }));
    if (axes.length < 2) { mount(pcBox, empty("The runs share one config: nothing to plot against.")); pc = null; return; }
    pc = parallelCoordinates(axes, rows, { width: Math.max(600, pcBox.clientWidth || 900), height: 260,
      onHover: (id) => { hi = id; tableBox.querySelectorAll("tbody tr").forEach((tr) => tr.classList.toggle("cursor", tr.dataset.key === id)); } });
    mount(pcBox, pc.el, h("div.legend", h("span.muted", `colour: ${key} from ${fmtNum(lo)} `),
      h("span.swatch", { style: { background: ramp(0) } }), h("span.swatch", { style: { background: ramp(0.5) } }), h("span.swatch", { style: { background: ramp(1) } }),
      h("span.muted", ` to ${fmtNum(hiV)}`)));
  }

  keySel.addEventListener("change", async () => {
    key = keySel.value;
    document.getElementById("pc-key").textContent = key;
    save();
    drawTable(); drawPC();
    await loadChart();
  });

  drawTable();
  drawPC();
  await loadChart();

  const running = runs.filter((r) => r.status === "running");
  if (running.length) {
    const stream = follow({ run: running.map((r) => r.run_id), since: cursorFor(Object.fromEntries(running.map((r) => [r.run_id, r.ingested_seq]))), min_interval: 1 }, (ev, data) => {
      if ((ev !== "delta" && ev !== "rewind") || !data.runs || !chart) return;
      if (ev === "rewind") { // resumed from a step: the dead attempts' tails go
        for (const [rid, rw] of Object.entries(data.runs)) {
          const idx = runs.findIndex((r) => r.run_id === rid);
          if (idx >= 0 && !key.startsWith("sys/")) chart.truncate(idx, rw.from_step);
        }
        return;
      }
      for (const [rid, d] of Object.entries(data.runs)) {
        const p = d.points && d.points[key];
        const idx = runs.findIndex((r) => r.run_id === rid);
        if (p && idx >= 0) chart.append(idx, p.step, clean(p.value));
      }
    });
    ctx.onDispose(() => stream.close());
  }
}
