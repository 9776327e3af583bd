// The fleet overview: runs by state, CPU/GPU use, agents with their objectives and budgets,
// alerts, the latest decisions with their reasons, and the most recently active runs.
// One GET /api/fleet (plus one page of /api/runs) every few seconds.
import { api } from "../api.js";
import { fleetPath, recentRunsPath } from "../paths.js";
import { h, mount } from "../dom.js";
import { ago, bar, fmtDuration, fmtNum, fmtValue, pill } from "../format.js";
import { decisionItem, empty, navigable } from "../ui.js";

const STATES = ["running", "completed", "failed", "crashed", "stopped"];

/** Render the overview page. */
export async function overviewPage(ctx) {
  const stats = h("div.grid.stats");
  const agents = h("div.panel");
  const alerts = h("div.panel");
  const decisions = h("div.panel");
  const hosts = h("div.panel");
  const recent = h("div.panel");
  mount(ctx.root,
    h("div.page-head", h("h1", "Fleet"), h("span.sub", h("span#fleet-updated.muted"))),
    stats,
    h("div.grid.main-side",
      h("div.grid", { style: { marginBottom: 0, alignContent: "start" } }, agents, recent),
      h("div.grid", { style: { marginBottom: 0, alignContent: "start" } }, alerts, decisions, hosts)));
  let first = true;
  let detach = null;
  let decisionsSig = null; // re-drawn only when new decisions arrive (keeps evidence open)

  async function refresh() {
    const [f, runs] = await Promise.all([
      api(fleetPath(), { signal: ctx.signal }),
      api(recentRunsPath(), { signal: ctx.signal }),
    ]);
    if (!ctx.alive) return;
    mount(stats, ...statCards(f));
    mount(agents, ...agentsTable(f.agents, f.now));
    mount(alerts, ...alertList(f.alerts, f.now, f.alert_counts));
    const sig = f.decisions.map((d) => d.decision_id).join(",");
    if (sig !== decisionsSig) {
      decisionsSig = sig;
      mount(decisions, ...decisionList(f.decisions, new Map(f.agents.map((a) => [a.agent_id, a.objective]))));
    }
    mount(hosts, ...hostTable(f.resources));
    mount(recent, ...recentRuns(runs, f.now));
    if (detach) detach();
    detach = navigable(recent.querySelector("table") || h("table"), { open: (tr) => { location.hash = `#/runs/${tr.dataset.key}`; } });
    document.getElementById("fleet-updated").textContent = `updated ${new Date(f.now * 1000).toLocaleTimeString()}`;
    if (first) {
      first = false;
      performance.mark("assay:overview-rendered");
    }
  }

  ctx.onDispose(() => detach && detach());
  await refresh();
  ctx.every(3000, refresh);
}

function statCards(f) {
  const by = f.runs.by_status || {};
  const r = f.resources;
  const running = by.running || 0;
  const agentsActive = f.agents.filter((a) => a.status === "running").length;
  // The list is capped (newest 20 of each kind); alert_counts counts them all.
  const counts = f.alert_counts || { error: f.alerts.filter((a) => a.level === "error").length, warn: f.alerts.filter((a) => a.level !== "error").length };
  const errors = counts.error;
  const gpuMem = r.gpu_mem_total_mb ? `${fmtNum(r.gpu_mem_used_mb / 1024, 3)} / ${fmtNum(r.gpu_mem_total_mb / 1024, 3)} GiB` : "";
  return [
    h("div.panel.stat", h("span.label", "Runs"),
      h("span.value", fmtNum(f.runs.total), h("small", plural(f.runs.projects, "project"))),
      h("div.status-chips", STATES.filter((s) => by[s]).map((s) =>
        h("a.chip", { href: `#/runs?status=${s}`, title: `show ${s} runs` }, pill(s), h("b", fmtNum(by[s])))))),
    h("div.panel.stat", h("span.label", "Running"),
      h("span.value", fmtNum(running), h("small", `on ${r.host_count} host${r.host_count === 1 ? "" : "s"}`)),
      h("span.detail", h("span", `process CPU ${fmtNum(r.process_cpu_percent / 100, 3)} cores`),
        h("span", `RSS ${fmtNum(r.rss_mb / 1024, 3)} GiB`))),
    h("div.panel.stat", h("span.label", "CPU"),
      h("span.value", r.cpu_percent_mean == null ? "–" : `${fmtNum(r.cpu_percent_mean, 3)}%`, h("small", "mean host use")),
      bar(r.cpu_percent_mean || 0, 100, "mean CPU use of hosts with running runs")),
    h("div.panel.stat", h("span.label", "GPU"),
      h("span.value", r.gpu_util_mean == null ? "–" : `${fmtNum(r.gpu_util_mean, 3)}%`,
        h("small", r.gpu_count ? `${r.gpu_count} GPU${r.gpu_count === 1 ? "" : "s"}` : "no GPUs reported")),
      r.gpu_count ? bar(r.gpu_util_mean || 0, 100, "mean GPU utilization") : null,
      gpuMem ? h("span.detail", `memory ${gpuMem}`) : null),
    h("div.panel.stat", h("span.label", "Agents"),
      h("span.value", fmtNum(f.agents.length), h("small", `${agentsActive} active`)),
      h("span.detail", plural(counts.error + counts.warn, "alert"), errors ? h("span.pill.s-error", plural(errors, "error")) : null)),
  ];
}

function budgetBlock(b) {
  const rows = [];
  const dims = [["trials", "trials", (v) => fmtNum(v)], ["wall_clock_s", "time", fmtDuration],
    ["gpu_hours", "GPU-h", (v) => fmtNum(v, 3)], ["cpu_hours", "CPU-h", (v) => fmtNum(v, 3)]];
  for (const [k, label, f] of dims) {
    const d = b[k];
    if (!d || d.limit == null) continue;
    rows.push(h("span.k", label), bar(d.used || 0, d.limit, `${label}: ${f(d.used || 0)} used of ${f(d.limit)}`),
      h("span.v", `${f(d.used || 0)} / ${f(d.limit)}`, h("span.muted", d.left != null ? ` · ${f(d.left)} left` : "")));
  }
  if (!rows.length) return h("span.muted", "no limits");
  return h("div.budget", rows);
}

function agentsTable(agents, now) {
  const head = h("h2", "Agents", h("span.count", String(agents.length)));
  if (!agents.length) return [head, empty("No agents yet. Declare an objective: assay run objective.yaml, or POST /api/objectives.")];
  const rows = agents.map((a) => h("tr.clickable", { dataset: { key: a.agent_id }, onclick: () => { location.hash = `#/agents/${a.agent_id}`; } },
    h("td", h("a", { href: `#/agents/${a.agent_id}` }, a.objective), h("div.muted.mono", a.agent_id)),
    h("td", pill(a.status), a.stalled ? h("div", pill("stale", "no update for a while")) : null),
    h("td", a.project, h("div.muted", `${a.metric || "?"} (${a.mode || "?"})`)),
    h("td.num", a.best ? h("span.best", fmtNum(a.best.value)) : "–",
      a.best ? h("div.muted", h("a", { href: `#/runs/${a.best.trial_id}`, onclick: (e) => e.stopPropagation() }, a.best.trial_id)) : null),
    h("td.wrap", Object.entries(a.counts).map(([s, n]) => h("span.nowrap", { style: { marginRight: "6px", lineHeight: "22px" } }, pill(s), ` ${n}`))),
    h("td", { style: { minWidth: "190px" } }, budgetBlock(a.budget)),
    h("td.num", a.concurrency ?? "–"),
    h("td.nowrap", ago(a.updated_at))));
  return [head, h("div.table-wrap", h("table.data",
    h("thead", h("tr", ["Objective", "Status", "Project · metric", "Best", "Trials", "Budget used / limit", "Conc.", "Updated"].map((t) => h("th", t)))),
    h("tbody", rows)))];
}

function alertList(alerts, now, counts) {
  const total = counts ? counts.error + counts.warn : alerts.length;
  const head = h("h2", "Alerts", h("span.count", String(total)));
  if (!alerts.length) return [head, empty("All quiet: no failed runs, silent runs or stalled agents.")];
  return [head, h("div.list.scroll", alerts.slice(0, 40).map((a) => h(`div.item.alert-${a.level}`,
    h("div.line", h("a.grow", { href: a.href, title: a.message }, a.message), h("span.when", ago(a.time))))))];
}

function decisionList(ds, names) {
  const head = h("h2", "Latest decisions");
  if (!ds.length) return [head, empty("No decisions yet.")];
  return [head, h("div.list.scroll", ds.map((d) => decisionItem(d, { names })))];
}

function hostTable(r) {
  const head = h("h2", "Hosts", h("span.count", String(r.host_count)), h("span.right.muted", "latest sys/ values of running runs"));
  if (!r.hosts.length) return [head, empty("No running runs report system metrics.")];
  return [head, h("div.table-wrap.scroll", h("table.data",
    h("thead", h("tr", ["Host", "Runs", "CPU", "Mem", "GPUs"].map((t) => h("th", t)))),
    h("tbody", r.hosts.map((x) => h("tr",
      h("td.mono", x.host), h("td.num", x.runs),
      h("td", { title: `process CPU ${fmtNum(x.process_cpu_percent)}%` }, x.cpu_percent == null ? "–" : h("div", `${fmtNum(x.cpu_percent, 3)}%`, bar(x.cpu_percent, 100))),
      h("td", x.memory_used_percent == null ? "–" : h("div", `${fmtNum(x.memory_used_percent, 3)}%`, bar(x.memory_used_percent, 100))),
      h("td", x.gpus.length ? x.gpus.map((g) => gpuLine(g)) : h("span.muted", "none")))))))];
}

/** One GPU of a host: utilization, and links to the running runs holding memory on it. */
function gpuLine(g) {
  const runs = g.runs || [];
  return h("div.nowrap", { title: `GPU ${g.index}: ${fmtValue(g.memory_used_mb)} / ${fmtValue(g.memory_total_mb)} MB` +
      (runs.length ? `; used by ${runs.join(", ")}` : "; no running run of this host holds memory on it") },
    `#${g.index} ${g.utilization_percent == null ? "–" : fmtNum(g.utilization_percent, 3) + "%"}`,
    runs.length ? h("span.muted", " · ", ...runs.slice(0, 3).flatMap((rid, i) => [i ? ", " : "",
      h("a.gpu-run", { href: `#/runs/${encodeURIComponent(rid)}` }, rid)]),
      runs.length > 3 ? ` +${runs.length - 3}` : "") : null);
}

function recentRuns(page, now) {
  const head = h("h2", "Recently active runs", h("span.count", fmtNum(page.total)),
    h("a.right", { href: "#/runs" }, "all runs →"));
  if (!page.runs.length) return [head, empty("No runs yet. Log one: run = assay.init(project=...); run.log({...}).")];
  const rows = page.runs.map((r) => h("tr.clickable", { dataset: { key: r.run_id }, onclick: () => { location.hash = `#/runs/${r.run_id}`; } },
    h("td", h("a", { href: `#/runs/${r.run_id}` }, r.name || r.run_id)),
    h("td", pill(r.status)), h("td", r.project),
    h("td.num", r.last_step >= 0 ? fmtNum(r.last_step) : "–"),
    h("td.trunc.muted", { title: summaryLine(r.summary) }, summaryLine(r.summary)),
    h("td.nowrap", ago(r.updated_at))));
  return [head, h("div.table-wrap", h("table.data",
    h("thead", h("tr", ["Run", "Status", "Project", "Step", "Summary", "Updated"].map((t) => h("th", t)))),
    h("tbody", rows)))];
}

function summaryLine(s) {
  return Object.entries(s || {}).filter(([k]) => !k.startsWith("sys/")).slice(0, 4)
    .map(([k, v]) => `${k}=${fmtValue(v)}`).join("  ");
}

function plural(n, word) {
  return `${fmtNum(n)} ${word}${n === 1 ? "" : "s"}`;
}
