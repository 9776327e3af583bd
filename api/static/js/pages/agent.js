// One agent: its objective, best so far, budget, every trial's curve (live), each launch and
// stop with its evidence, and the override controls (each asks for a reason, which goes
// into the audit trail with the signed-in name).
import { api, qs } from "../api.js";
import { LineChart, clean, cutFrom } from "../chart.js";
import { h, mount } from "../dom.js";
import { ago, color, fmtDuration, fmtNum, fmtValue, pill } from "../format.js";
import { cursorFor, follow } from "../live.js";
import { can, currentWho } from "../session.js";
import { decisionItem, dialog, empty, field, sentWarning, toast } from "../ui.js";

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
      h("div.chart-card", h("div.chart-title", h("span", "best so far"), h("span.meta", "completed trials, in launch order")), bestBox)),
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
    // An agent that ended (finished, stopped, failed) has nothing left to spend.
    const ended = !["running", "paused", "starting"].includes(a.status);
    const rows = [["trials", "Trials", (v) => fmtNum(v)], ["wall_clock_s", "Wall clock", fmtDuration], ["gpu_hours", "GPU-hours", (v) => fmtNum(v, 3)], ["cpu_hours", "CPU-hours", (v) => fmtNum(v, 3)]];
    mount(budget, h("span.label.muted", "BUDGET USED / LIMIT"), h("div.budget", { style: { marginTop: "6px" } }, rows.map(([k, label, fmt]) => {
      const d = b[k] || {};
      const lim = d.limit == null ? "∞" : fmt(d.limit);
      // More trials launched than the limit allows: it was lowered below them since.
      const lowered = k === "trials" && d.limit != null && d.used != null && d.used > d.limit;
      return [h("span.k", label), d.limit == null ? h("span.muted", "no limit") : h("div.bar" + (d.fraction >= 1 ? ".full" : d.fraction >= 0.8 ? ".high" : ""), h("div.bar-fill", { style: { width: `${((d.fraction || 0) * 100).toFixed(1)}%` } })),
        h("span.v", { dataset: { key: k } }, lowered ? `${fmt(d.used)} launched / limit ${lim} (lowered)` : `${d.used == null ? "–" : fmt(d.used)} / ${lim}`,
          d.left != null && !ended && !lowered ? h("span.muted", ` · ${fmt(d.left)} left`) : null)];
    })), h("div.muted", { style: { marginTop: "6px" } }, `concurrency ${a.concurrency ?? "–"} · ${a.trials_total} trials launched`));
  }

  /** Whether the signed-in token may override this agent: a supervisor, or its owner. */
  function mayOverride() {
    return can("supervisor") || (can("researcher") && !!a.owner && a.owner === currentWho()?.name);
  }

  function drawControls() {
    const allowed = mayOverride();
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
    let text;
    if (action === "budget") {
      // The agent's current limits (earlier overrides included), not the objective's first
      // ones; only the limits changed here are sent, the server keeps the others as they are.
      const cur = a.budget || a.spec?.budget || {};
      const init = {
        trials: cur.trials == null ? "" : String(cur.trials),
        wall_clock: limitText(cur.wall_clock_s ?? cur.wall_clock, true),
        cpu_hours: limitText(cur.cpu_hours), gpu_hours: limitText(cur.gpu_hours),
      };
      const input = (name, o2) => h("input", { name, value: init[name], ...o2 });
      fields.push(field("Trials", input("trials", { type: "number", min: 1 })),
        field("Wall clock", input("wall_clock", { type: "text", placeholder: "no limit" }), "e.g. 90m, 2h, 1h30m"),
        field("CPU-hours", input("cpu_hours", { type: "text", inputmode: "decimal", placeholder: "no limit" }), "hours, e.g. 1.5, or 45m"),
        field("GPU-hours", input("gpu_hours", { type: "text", inputmode: "decimal", placeholder: "no limit" }), "hours, e.g. 1.5, or 45m"));
      text = "Shows the current limits. Only the ones you change are sent; an emptied one means no limit.";
      params = (v) => {
        const change = {};
        for (const k of Object.keys(init)) {
          const x = String(v[k] ?? "").trim();
          if (x === init[k]) continue;
          change[k] = x === "" ? null : k === "trials" || /^[\d.]+(e[+-]?\d+)?$/i.test(x) ? Number(x) : x;
        }
        if (!Object.keys(change).length) throw new Error("Change at least one limit.");
        return { budget: change };
      };
    } else if (action === "concurrency") {
      fields.push(field("Concurrent trials", h("input", { name: "concurrency", type: "number", min: 1, required: true, value: a.concurrency ?? 1 })));
      params = (v) => ({ concurrency: Number(v.concurrency) });
    } else if (action === "pin") {
      // A pin runs a config not tried yet: the best trial's config is only a template (the
      // agent refuses a config already run), and stays refused here until it is edited.
      const ran = new Map(a.trials.map((t) => [canonical(t.config || {}), t.trial_id]));
      const ex = a.best?.config ? JSON.stringify(a.best.config) : '{"lr": 0.001}';
      text = a.best?.config
        ? `Pre-filled with the best trial's config (${a.best.trial_id}) as a template: it has run already, so change at least one value.`
        : "Give the config to run next.";
      fields.push(field("Config (JSON)", h("textarea.mono", { name: "config", rows: 4, required: true }, ex), "runs next, ahead of the searcher's suggestions; a config already run is refused"));
      params = (v) => {
        let cfg;
        try { cfg = JSON.parse(v.config); } catch { throw new Error("The config is not valid JSON."); }
        if (!cfg || typeof cfg !== "object" || Array.isArray(cfg)) throw new Error("The config must be a JSON object.");
        const dup = ran.get(canonical(cfg));
        if (dup) throw new Error(`Trial ${dup} already ran this config: edit it to pin a new one.`);
        return { config: cfg };
      };
    }
    await dialog({ title: `${label.replace("…", "")} — ${a.objective}`, text, fields, submit: label.replace("…", ""), danger: o.danger,
      validate: (d) => { try { params(d); return ""; } catch (e) { return e.message; } },
      send: (v) => send(action, params(v), v.reason) });
  }

  /** Send an override; "" when stored, else the server's refusal (shown in the dialog). */
  async function send(action, params, reason) {
    try {
      const r = await api(`/api/agents/${encodeURIComponent(a.agent_id)}/overrides`, { method: "POST", body: { action, reason, params } });
      toast(`${action} sent (${r.override_id}, ${r.status}); applied at the agent's next step.`, "ok");
      sentWarning(r);
      refresh();
      return "";
    } catch (e) {
      const msg = `${e.error}${e.hint ? " — " + e.hint : ""}`;
      toast(msg, "error", 8000);
      return msg;
    }
  }

  async function stopTrial(tid) {
    const v = await dialog({ title: `Stop run ${tid}?`, text: `Agent ${a.objective} stops it at its next step.`, submit: "Stop run", danger: true });
    if (!v) return;
    try {
      const r = await api(`/api/runs/${encodeURIComponent(tid)}/stop`, { method: "POST", body: { reason: v.reason } });
      toast(`Stop requested for ${tid} (${r.override_id}).`, "ok");
      sentWarning(r);
      refresh();
    } catch (e) {
      toast(`${e.error}${e.hint ? " — " + e.hint : ""}`, "error", 8000);
    }
  }

  // The agent's saved state can lag its trials' runs (or the agent died): a trial it says is
  // running whose run has finished (completed, failed, crashed, stopped) shows the run's
  // status, and no stop button. One runs read per refresh; each finished run is read once.
  const runStatus = new Map(); // trial id -> its run's status
  async function loadRunStatuses() {
    const open = a.trials.filter((t) => t.status === "running" || t.status === "pending").map((t) => t.trial_id);
    const before = JSON.stringify([...runStatus]);
    if (open.length) {
      try {
        const page = await api(`/api/runs${qs({ status: "running", project: a.project, limit: 1000 })}`, { signal: ctx.signal });
        const running = new Set(page.runs.map((r) => r.run_id));
        const unknown = [];
        for (const tid of open) {
          if (running.has(tid)) runStatus.set(tid, "running");
          else if (!runStatus.has(tid) || runStatus.get(tid) === "running") unknown.push(tid);
        }
        await Promise.all(unknown.slice(0, 20).map(async (tid) => {
          try {
            runStatus.set(tid, (await api(`/api/runs/${encodeURIComponent(tid)}`, { signal: ctx.signal })).status);
          } catch (e) {
            if (e.status !== 404) throw e; // 404: launched, no run row yet
          }
        }));
      } catch (e) {
        if (e.kind === "aborted") throw e; // else: the agent's word until the next refresh
      }
    }
    return JSON.stringify([...runStatus]) !== before;
  }

  /** A trial's status: its run's when the run finished and the agent's state lags. */
  function statusOf(t) {
    const rs = runStatus.get(t.trial_id);
    return (t.status === "running" || t.status === "pending") && rs && rs !== "running" ? rs : t.status;
  }

  function drawTrials() {
    const ts = [...a.trials].reverse();
    mount(trials, h("h2", "Trials", h("span.count", String(ts.length))),
      ts.length ? h("div.table-wrap.scroll.tall", h("table.data",
        h("thead", h("tr", ["", "Run", "Status", "Final", "Config", "Origin / reason", ""].map((x) => h("th", x)))),
        h("tbody", ts.map((t) => h("tr", { dataset: { key: t.trial_id } },
          h("td", h("span.swatch", { style: { background: colorOf(t.trial_id) } })),
          h("td", h("a.mono", { href: `#/runs/${t.trial_id}` }, t.trial_id), t.trial_id === a.best?.trial_id ? h("span.best", " ★") : null),
          h("td", statusOf(t) === t.status ? pill(t.status)
            : pill(statusOf(t), `its run is ${statusOf(t)}; the agent's last saved state says ${t.status}`)),
          h("td.num", t.final == null ? "–" : fmtNum(t.final)),
          h("td.trunc.mono", { title: JSON.stringify(t.config) }, Object.entries(t.config || {}).map(([k, v]) => `${k}=${fmtValue(v)}`).join(" ")),
          h("td.trunc", { title: t.reason || t.origin || "" }, t.origin || "", t.reason ? h("span.muted", ` · ${t.reason}`) : null),
          h("td", statusOf(t) === "running" && mayOverride() ? h("button.btn.small.danger", { type: "button", title: "stop this run", onclick: () => stopTrial(t.trial_id) }, "stop") : null)))))) : empty("No trials yet."));
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
    // Finished trials never change: read once. Running ones come from the stream, which
    // resumes each right after what its history read holds: the run's ingested_seq read
    // *before* the history (points the stream sends again are dropped by step).
    const runningMissing = missing.filter((tid) => a.trials.find((t) => t.trial_id === tid)?.status === "running");
    const before = new Map();
    if (runningMissing.length) {
      const page = await api(`/api/runs${qs({ status: "running", project: a.project, limit: 1000 })}`, { signal: ctx.signal });
      for (const r of page.runs) if (runningMissing.includes(r.run_id)) before.set(r.run_id, r.ingested_seq);
    }
    await Promise.all(missing.map(async (tid) => {
      try {
        const r = await api(`/api/runs/${encodeURIComponent(tid)}/history${qs({ key: a.metric, max_points: 300 })}`, { signal: ctx.signal });
        const s = r.series[a.metric] || { step: [], value: [] };
        series.set(tid, { x: s.step, y: clean(s.value) });
      } catch (e) {
        if (e.status === 404) series.set(tid, { x: [], y: [] }); // launched, no run row yet
        else throw e;
      }
      // No seq known (no run row, or not running when listed): the stream sends it all.
      if (before.has(tid)) seqOf.set(tid, before.get(tid)); else seqOf.delete(tid);
    }));
    const sig = JSON.stringify([want, a.trials.map((t) => [t.status, t.final]), a.best?.trial_id]);
    markHeld();
    if (sig === curvesSig) return; // unchanged: keep the user's zoom
    curvesSig = sig;
    drawCurves(want);
    drawBest();
  }
  let curvesSig = "";
  const seenStatus = new Map();
  const seqOf = new Map(); // trial id -> ingested seq its series holds every point up to

  /** What the chart holds of each running trial (tests read it): {id: [points, last step]}. */
  function markHeld() {
    const held = {};
    for (const t of a.trials) {
      const s = t.status === "running" && series.get(t.trial_id);
      if (s) held[t.trial_id] = [s.x.length, s.x.length ? s.x[s.x.length - 1] : null];
    }
    curvesBox.dataset.running = JSON.stringify(held);
  }

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
    // As the agent keeps its best (the "BEST SO FAR" card): completed trials only, never a
    // failed or stopped one's last value, nor a running one's latest.
    const sign = a.mode === "min" ? 1 : -1;
    const xs = [], ys = [], fin = [];
    let bestV = null;
    a.trials.forEach((t, i) => {
      const v = t.status === "completed" && typeof t.final === "number" && Number.isFinite(t.final) ? t.final : null;
      if (v != null && (bestV == null || sign * v < sign * bestV)) bestV = v;
      xs.push(i + 1); ys.push(bestV); fin.push(v);
    });
    bestBox.dataset.best = bestV == null ? "" : String(bestV); // where the curve ends (tests read it)
    const s = [{ label: "best so far", color: "#59a14f", x: xs, y: ys, width: 2 }, { label: "completed trial's final", color: "#8b949e", x: xs, y: fin, width: 0.8 }];
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
    // Only trials whose curve is shown (series holds them) are followed.
    const running = a.trials.filter((t) => t.status === "running" && series.has(t.trial_id)).map((t) => t.trial_id).sort();
    const key = running.join(",");
    if (key === streamKey) return;
    streamKey = key;
    if (stream) stream.close();
    stream = null;
    if (!running.length) return;
    // Resume each running trial right after what the page holds of it: where its history
    // read ended, or the last complete delta of the stream this one replaces. Not the run's
    // ingested_seq now: points logged since those reads would never be shown.
    const seqs = {};
    for (const rid of running) if (seqOf.has(rid)) seqs[rid] = seqOf.get(rid);
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
        if (!series.has(rid)) continue;
        const p = d.points && d.points[a.metric];
        if (p) {
          const idx = curves ? curves.series.findIndex((s) => s.label === rid) : -1;
          const s = series.get(rid);
          const last = s.x.length ? s.x[s.x.length - 1] : -Infinity;
          const ys = clean(p.value);
          const nx = s.x.slice(), ny = s.y.slice();
          p.step.forEach((x, i) => { if (x > last) { nx.push(x); ny.push(ys[i]); } });
          series.set(rid, { x: nx, y: ny });
          if (idx >= 0) curves.append(idx, p.step, ys);
        }
        // A complete delta (nothing more waiting) brought the run up to its ingested_seq.
        if (!data.more && d.ingested_seq != null) seqOf.set(rid, Math.max(seqOf.get(rid) ?? -1, d.ingested_seq));
      }
      markHeld();
    });
  }
  ctx.onDispose(() => stream && stream.close());

  async function refresh() {
    [a, f] = await Promise.all([
      api(`/api/agents/${encodeURIComponent(id)}`, { signal: ctx.signal }),
      api(`/api/fleet/agents/${encodeURIComponent(id)}`, { signal: ctx.signal }),
    ]);
    if (!ctx.alive) return;
    drawHead(); drawControls(); drawTrials();
    await Promise.all([loadCurves(), loadDecisions(), loadOverrides(), loadAudit(), trialStatuses()]);
    follows();
  }
  const trialStatuses = () => loadRunStatuses().then((changed) => { if (changed && ctx.alive) drawTrials(); });

  drawHead(); drawControls(); drawTrials();
  await Promise.all([loadCurves(), loadDecisions(), loadOverrides(), loadAudit(), trialStatuses()]);
  follows();
  ctx.every(2500, refresh);
}

/** A limit as the budget dialog shows it: durations as text ("1h30m"), hours as given. */
function limitText(v, duration = false) {
  if (v == null) return "";
  if (!duration || typeof v !== "number") return String(v);
  const d = Math.floor(v / 86400), hh = Math.floor((v % 86400) / 3600), m = Math.floor((v % 3600) / 60), sec = +(v % 60).toFixed(3);
  const out = `${d ? d + "d" : ""}${hh ? hh + "h" : ""}${m ? m + "m" : ""}${sec ? sec + "s" : ""}`;
  return out || "0s";
}

/** JSON with sorted keys: two configs with the same values compare equal. */
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  return JSON.stringify(v);
}
