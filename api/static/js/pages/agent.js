// One agent: its objective, best so far, budget, every trial's curve (live), each launch and
// stop with its evidence, and the override controls (each asks for a reason, which goes
// into the audit trail with the signed-in name).
import { api, qs } from "../api.js";
import { LineChart, clean, cutFrom } from "../chart.js";
import { h, mount } from "../dom.js";
import { ago, color, fmtDuration, fmtNum, fmtValue, pill } from "../format.js";
import { cursorFor, follow } from "../live.js";
import { can } from "../session.js";
import { decisionItem, dialog, empty, field, toast } from "../ui.js";

const MAX_CURVES = 60;

/** Render the agent page. */
export async function agentPage(ctx, id) {
  const [agent, fleet] = await Promise.all([
    api(`/api/agents/${encodeURIComponent(id)}`, { signal: ctx.signal }),
    api(`/api/fleet/agents/${encodeURIComponent(id)}`, { signal: ctx.signal }),
  ]);
  let a = agent, f = fleet;
  const head = h("div"), budget = h("div.panel"), controls = h("div.panel"), best = h("div.panel");
  const curvesBox = h("div.chart"), bestBox = h("div.chart"), legend = h("div.legend");
  const trials = h("div.panel"), decisions = h("div.panel"), overrides = h("div.panel"), audit = h("div.panel");
  const kindSel = h("select", { title: "decision kind" }, ["all", "launch", "resume", "stop", "override", "complete", "fail", "retry", "retrain", "skip", "stale", "wait", "finish"].map((k) => h("option", { value: k }, k)));
  mount(ctx.root, head,
    h("div.grid.stats", best, budget, controls),
    h("div.grid.cols-2",
      h("div.chart-card", h("div.chart-title", h("span", `${a.metric} of every trial`), h("span.meta", "drag to zoom · double-click to reset")), curvesBox, legend),
      h("div.chart-card", h("div.chart-title", h("span", "best so far"), h("span.meta", "by trial, in launch order")), bestBox)),
    h("div.grid.main-side", trials, h("div.grid", { style: { marginBottom: 0, alignContent: "start" } }, overrides, decisions)),
    audit);

  let curves = null, bestChart = null;
  ctx.onDispose(() => { curves && curves.destroy(); bestChart && bestChart.destroy(); });
  const series = new Map(); // trial id -> {x, y}
  let stream = null, streamKey = "";

  function drawHead() {
    mount(head,
      h("div.crumbs", h("a", { href: "#/" }, "Fleet"), " › agent"),
      h("div.page-head", h("h1", a.objective), pill(a.status), f.stalled ? pill("stale", "no update for a while") : null,
        h("span.mono.muted", a.agent_id)),
      h("div.page-head", { style: { marginTop: "-6px" } }, h("div.sub",
        h("span", `project ${a.project}`), h("span", `${a.mode === "min" ? "minimise" : "maximise"} ${a.metric}`),
        a.spec?.searcher ? h("span", `searcher ${a.spec.searcher}`) : null,
        a.spec?.stoppers ? h("span", `stoppers ${[].concat(a.spec.stoppers).map((s) => (typeof s === "string" ? s : Object.keys(s)[0])).join(", ")}`) : null,
        a.owner ? h("span", `owner ${a.owner}`) : null, h("span", "updated ", ago(a.updated_at)))));
    mount(best, h("span.label.muted", "BEST SO FAR"),
      a.best ? [h("div.stat", h("span.value.best", fmtNum(a.best.value)), h("span.detail", "trial ", h("a.mono", { href: `#/runs/${a.best.trial_id}` }, a.best.trial_id))),
        h("div.muted.mono", { style: { fontSize: "11.5px", marginTop: "4px" } }, Object.entries(a.best.config || {}).map(([k, v]) => `${k}=${fmtValue(v)}`).join("  "))]
        : h("p.empty", "No finished trial yet."));
    const b = f.budget;
    const rows = [["trials", "Trials", (v) => fmtNum(v)], ["wall_clock_s", "Wall clock", fmtDuration], ["gpu_hours", "GPU-hours", (v) => fmtNum(v, 3)], ["cpu_hours", "CPU-hours", (v) => fmtNum(v, 3)]];
    mount(budget, h("span.label.muted", "BUDGET USED / LIMIT"), h("div.budget", { style: { marginTop: "6px" } }, rows.map(([k, label, fmt]) => {
      const d = b[k] || {};
      const lim = d.limit == null ? "∞" : fmt(d.limit);
      return [h("span.k", label), d.limit == null ? h("span.muted", "no limit") : h("div.bar" + (d.fraction >= 1 ? ".full" : d.fraction >= 0.8 ? ".high" : ""), h("div.bar-fill", { style: { width: `${((d.fraction || 0) * 100).toFixed(1)}%` } })),
        h("span.v", `${d.used == null ? "–" : fmt(d.used)} / ${lim}`, d.left != null ? h("span.muted", ` · ${fmt(d.left)} left`) : null)];
    })), h("div.muted", { style: { marginTop: "6px" } }, `concurrency ${a.concurrency ?? "–"} · ${a.trials_total} trials launched`));
  }

  function drawControls() {
    const allowed = can("supervisor") || (can("researcher") && a.owner && a.owner === currentName());
    const active = a.status === "running" || a.status === "paused";
    const btn = (label, action, o = {}) => h("button.btn" + (o.danger ? ".danger" : ""), { type: "button", disabled: !allowed || o.disabled,
      dataset: { action }, onclick: () => override(action, label, o) }, label);
    mount(controls, h("span.label.muted", "OVERRIDES"),
      h("div.controls", { style: { marginTop: "6px" } },
        btn("Pause", "pause", { disabled: a.status !== "running" }), btn("Resume", "resume", { disabled: a.status !== "paused" }),
        btn("Stop agent", "stop", { danger: true, disabled: !active }), h("span.sep"),
        btn("Budget…", "budget", { disabled: !active }), btn("Concurrency…", "concurrency", { disabled: !active }), btn("Pin config…", "pin", { disabled: !active })),
      h("p.muted", { style: { marginTop: "6px", fontSize: "11.5px" } }, allowed
        ? "Applied at the agent's next step; each asks for a reason, recorded with your name in the audit trail."
        : "Supervisors, and the researcher who declared the objective, may override this agent."));
  }

  async function override(action, label, o) {
    const fields = [];
    let params = () => ({});
    if (action === "budget") {
      const cur = a.spec?.budget || {};
      const tr = h("input", { name: "trials", type: "number", min: 1, value: cur.trials ?? "" });
      const gh = h("input", { name: "gpu_hours", type: "number", min: 0, step: "any", value: cur.gpu_hours ?? "" });
      const wc = h("input", { name: "wall_clock", type: "text", placeholder: "e.g. 2h", value: cur.wall_clock ?? "" });
      fields.push(field("Trials", tr), field("GPU-hours", gh), field("Wall clock", wc, "e.g. 90m, 2h; empty: unchanged"));
      params = (v) => ({ budget: Object.fromEntries([["trials", v.trials ? Number(v.trials) : null], ["gpu_hours", v.gpu_hours !== "" ? Number(v.gpu_hours) : null],
        ["wall_clock", v.wall_clock || null]].filter(([, x]) => x != null)) });
    } else if (action === "concurrency") {
      fields.push(field("Concurrent trials", h("input", { name: "concurrency", type: "number", min: 1, required: true, value: a.concurrency ?? 1 })));
      params = (v) => ({ concurrency: Number(v.concurrency) });
    } else if (action === "pin") {
      const ex = a.best?.config ? JSON.stringify(a.best.config) : '{"lr": 0.001}';
      fields.push(field("Config (JSON)", h("textarea.mono", { name: "config", rows: 4, required: true }, ex), "runs next, ahead of the searcher's suggestions"));
      params = (v) => ({ config: JSON.parse(v.config) });
    }
    const v = await dialog({ title: `${label.replace("…", "")} — ${a.objective}`, fields, submit: label.replace("…", ""), danger: o.danger,
      validate: (d) => { try { params(d); return ""; } catch { return "The config is not valid JSON."; } } });
    if (!v) return;
    await send(action, params(v), v.reason);
  }

  async function send(action, params, reason) {
    try {
      const r = await api(`/api/agents/${encodeURIComponent(a.agent_id)}/overrides`, { method: "POST", body: { action, reason, params } });
      toast(`${action} sent (${r.override_id}, ${r.status}); applied at the agent's next step.`, "ok");
      refresh();
    } catch (e) {
      toast(`${e.error}${e.hint ? " — " + e.hint : ""}`, "error", 8000);
    }
  }

  async function stopTrial(tid) {
    const v = await dialog({ title: `Stop run ${tid}?`, text: `Agent ${a.objective} stops it at its next step.`, submit: "Stop run", danger: true });
    if (!v) return;
    try {
      const r = await api(`/api/runs/${encodeURIComponent(tid)}/stop`, { method: "POST", body: { reason: v.reason } });
      toast(`Stop requested for ${tid} (${r.override_id}).`, "ok");
      refresh();
    } catch (e) {
      toast(`${e.error}${e.hint ? " — " + e.hint : ""}`, "error", 8000);
    }
  }

  function drawTrials() {
    const ts = [...a.trials].reverse();
    mount(trials, h("h2", "Trials", h("span.count", String(ts.length))),
      ts.length ? h("div.table-wrap.scroll.tall", h("table.data",
        h("thead", h("tr", ["", "Run", "Status", "Final", "Config", "Origin / reason", ""].map((x) => h("th", x)))),
        h("tbody", ts.map((t) => h("tr", { dataset: { key: t.trial_id } },
          h("td", h("span.swatch", { style: { background: colorOf(t.trial_id) } })),
          h("td", h("a.mono", { href: `#/runs/${t.trial_id}` }, t.trial_id), t.trial_id === a.best?.trial_id ? h("span.best", " ★") : null),
          h("td", pill(t.status)),
          h("td.num", t.final == null ? "–" : fmtNum(t.final)),
          h("td.trunc.mono", { title: JSON.stringify(t.config) }, Object.entries(t.config || {}).map(([k, v]) => `${k}=${fmtValue(v)}`).join(" ")),
          h("td.trunc", { title: t.reason || t.origin || "" }, t.origin || "", t.reason ? h("span.muted", ` · ${t.reason}`) : null),
          h("td", t.status === "running" && can("researcher") ? h("button.btn.small.danger", { type: "button", title: "stop this run", onclick: () => stopTrial(t.trial_id) }, "stop") : null)))))) : empty("No trials yet."));
  }

  const order = new Map();
  function colorOf(tid) {
    if (!order.has(tid)) order.set(tid, order.size);
    return color(order.get(tid));
  }

  async function loadCurves() {
    const ids = a.trials.map((t) => t.trial_id);
    const want = ids.slice(-MAX_CURVES);
    for (const t of a.trials) { // a trial that just finished is re-read whole (no stream gaps)
      if (seenStatus.get(t.trial_id) === "running" && t.status !== "running") series.delete(t.trial_id);
      seenStatus.set(t.trial_id, t.status);
    }
    const missing = want.filter((tid) => !series.has(tid));
    // Finished trials never change: read once. Running ones come from the stream.
    await Promise.all(missing.map(async (tid) => {
      try {
        const r = await api(`/api/runs/${encodeURIComponent(tid)}/history${qs({ key: a.metric, max_points: 300 })}`, { signal: ctx.signal });
        const s = r.series[a.metric] || { step: [], value: [] };
        series.set(tid, { x: s.step, y: clean(s.value) });
      } catch (e) {
        if (e.status === 404) series.set(tid, { x: [], y: [] }); // launched, no run row yet
        else throw e;
      }
    }));
    const sig = JSON.stringify([want, a.trials.map((t) => [t.status, t.final]), a.best?.trial_id]);
    if (sig === curvesSig) return; // unchanged: keep the user's zoom
    curvesSig = sig;
    drawCurves(want);
    drawBest();
  }
  let curvesSig = "";
  const seenStatus = new Map();

  function drawCurves(ids) {
    const bestId = a.best?.trial_id;
    const list = ids.filter((tid) => series.has(tid)).map((tid) => {
      const t = a.trials.find((x) => x.trial_id === tid) || {};
      const s = series.get(tid);
      return { label: tid, color: colorOf(tid), x: s.x, y: s.y, width: tid === bestId ? 2.6 : 1.3,
        dash: t.status === "stopped" ? [4, 3] : undefined };
    });
    if (!curves) curves = new LineChart(curvesBox, { series: list, height: 260 });
    else curves.setSeries(list);
    mount(legend, h("span.muted", "solid: running/completed · dashed: stopped early · thick: best"));
  }

  function drawBest() {
    const sign = a.mode === "min" ? 1 : -1;
    const xs = [], ys = [], fin = [];
    let bestV = null;
    a.trials.forEach((t, i) => {
      const v = typeof t.final === "number" ? t.final : null;
      if (v != null && (bestV == null || sign * v < sign * bestV)) bestV = v;
      xs.push(i + 1); ys.push(bestV); fin.push(v);
    });
    const s = [{ label: "best so far", color: "#59a14f", x: xs, y: ys, width: 2 }, { label: "trial final", color: "#8b949e", x: xs, y: fin, width: 0.8 }];
    if (!bestChart) bestChart = new LineChart(bestBox, { series: s, height: 260, xLabel: "trial", integerX: true });
    else bestChart.setSeries(s);
  }

  async function loadDecisions() {
    const kind = kindSel.value === "all" ? "" : kindSel.value;
    const d = await api(`/api/decisions${qs({ agent_id: a.agent_id, kind, limit: 300 })}`, { signal: ctx.signal });
    const sig = d.decisions.map((x) => x.decision_id).join();
    if (sig === decisionsSig) return;
    decisionsSig = sig;
    mount(decisions, h("h2", "Decisions", h("span.count", String(d.total)), h("span.right", kindSel)),
      d.decisions.length ? h("div.list.scroll.tall", [...d.decisions].reverse().map((x) => decisionItem(x, { showAgent: false })))
        : empty("No decisions yet."));
  }
  let decisionsSig = null;
  kindSel.addEventListener("change", () => { decisionsSig = null; loadDecisions(); });

  async function loadOverrides() {
    const o = await api(`/api/agents/${encodeURIComponent(a.agent_id)}/overrides`, { signal: ctx.signal });
    mount(overrides, h("h2", "Overrides", h("span.count", String(o.overrides.length))),
      o.overrides.length ? h("div.list.scroll", [...o.overrides].reverse().map((x) => h("div.item",
        h("div.line", pill(x.action === "stop_run" ? "stop" : "override", x.action), h("b", x.action), h("span", `by ${x.actor}`), pill(x.status), h("span.when", ago(x.time))),
        h("div.line", h("span.grow", { title: x.reason }, `“${x.reason}”`)),
        x.result ? h("div.line.muted", x.result) : null,
        Object.keys(x.params || {}).length ? h("div.line.muted.mono", JSON.stringify(x.params)) : null)))
        : empty("No overrides."));
  }

  async function loadAudit() {
    if (!can("supervisor")) {
      mount(audit, h("h2", "Audit trail"), empty("Supervisors see who did what, when and why."));
      return;
    }
    const r = await api(`/api/audit${qs({ target: `agent:${a.agent_id}`, limit: 50 })}`, { signal: ctx.signal });
    mount(audit, h("h2", "Audit trail", h("span.count", String(r.total)), h("span.right.muted", "hash-chained and signed")),
      r.entries.length ? h("div.table-wrap", h("table.data",
        h("thead", h("tr", ["When", "Who", "Action", "Why", "Details"].map((x) => h("th", x)))),
        h("tbody", r.entries.map((e) => h("tr", h("td.nowrap", ago(e.at)), h("td", h("b", e.actor)), h("td.mono", e.action),
          h("td.wrap", e.reason), h("td.trunc.mono.muted", { title: JSON.stringify(e.details) }, JSON.stringify(e.details)))))))
        : empty("No audit entries for this agent."));
  }

  function follows() {
    const running = a.trials.filter((t) => t.status === "running").map((t) => t.trial_id).sort();
    const key = running.join(",");
    if (key === streamKey) return;
    streamKey = key;
    if (stream) stream.close();
    stream = null;
    if (!running.length) return;
    // Resume each running trial right after what its history read showed.
    api(`/api/runs${qs({ status: "running", project: a.project, limit: 1000 })}`, { signal: ctx.signal }).then((page) => {
      if (!ctx.alive || key !== streamKey) return;
      const seqs = {};
      for (const r of page.runs) if (running.includes(r.run_id)) seqs[r.run_id] = r.ingested_seq;
      stream = follow({ run: running, key: [a.metric], since: cursorFor(seqs), min_interval: 0.5 }, (ev, data) => {
        if ((ev !== "delta" && ev !== "rewind") || !data.runs) return;
        if (ev === "rewind") { // a relaunched or resumed trial: its dead attempt's tail goes
          for (const [rid, rw] of Object.entries(data.runs)) {
            if (!series.has(rid) || a.metric.startsWith("sys/")) continue;
            series.set(rid, cutFrom(series.get(rid), rw.from_step));
            const idx = curves ? curves.series.findIndex((s) => s.label === rid) : -1;
            if (idx >= 0) curves.truncate(idx, rw.from_step);
          }
          return;
        }
        for (const [rid, d] of Object.entries(data.runs)) {
          const p = d.points && d.points[a.metric];
          if (!p || !series.has(rid)) continue;
          const idx = curves ? curves.series.findIndex((s) => s.label === rid) : -1;
          const s = series.get(rid);
          const last = s.x.length ? s.x[s.x.length - 1] : -Infinity;
          const ys = clean(p.value);
          const nx = s.x.slice(), ny = s.y.slice();
          p.step.forEach((x, i) => { if (x > last) { nx.push(x); ny.push(ys[i]); } });
          series.set(rid, { x: nx, y: ny });
          if (idx >= 0) curves.append(idx, p.step, ys);
        }
      });
    }).catch(() => { streamKey = ""; });
  }
  ctx.onDispose(() => stream && stream.close());

  async function refresh() {
    [a, f] = await Promise.all([
      api(`/api/agents/${encodeURIComponent(id)}`, { signal: ctx.signal }),
      api(`/api/fleet/agents/${encodeURIComponent(id)}`, { signal: ctx.signal }),
    ]);
    if (!ctx.alive) return;
    drawHead(); drawControls(); drawTrials();
    await Promise.all([loadCurves(), loadDecisions(), loadOverrides(), loadAudit()]);
    follows();
  }

  drawHead(); drawControls(); drawTrials();
  await Promise.all([loadCurves(), loadDecisions(), loadOverrides(), loadAudit()]);
  follows();
  ctx.every(2500, refresh);
}

function currentName() {
  const el = document.querySelector("#who .who-name");
  return el ? el.textContent : "";
}
