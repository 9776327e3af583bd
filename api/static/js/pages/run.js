// One run: curves (zoom, smoothing, log scale; live while it runs), system metrics, config
// and summary, code and environment capture, artifacts and lineage, verification.
import { ApiError, api, qs } from "../api.js";
import { expander, h, mount } from "../dom.js";
import { ago, fmtBytes, fmtDuration, fmtNum, fmtTime, fmtValue, kvTable, pill } from "../format.js";
import { lineageGraph } from "../graphs.js";
import { cursorFor, follow } from "../live.js";
import { MetricGrid, chartToolbar } from "../metrics.js";
import { runHistoryPath, runPath, userKeys as userKeysOf } from "../paths.js";
import { replaceQuery } from "../router.js";
import { can, currentWho } from "../session.js";
import { dialog, empty, sentWarning, tabs, toast } from "../ui.js";

/** Render the run page. */
export async function runPage(ctx, id) {
  performance.mark("assay:run-page-start");
  // The run and all its curves at once (the same requests as the early prefetch's).
  const history = api(runHistoryPath(id), { signal: ctx.signal });
  history.catch(() => {}); // an unknown run: the run's own 404 is the one reported
  const run = await api(runPath(id), { signal: ctx.signal });
  const keys = Object.keys(run.summary_stats || {}).sort();
  const userKeys = userKeysOf(run);
  const sysKeys = keys.filter((k) => k.startsWith("sys/"));
  const head = h("div");
  const verifyBadge = h("span.muted", "verifying…");
  const agentLine = h("div.sub");
  const actions = h("div.actions");
  let status = run.status;

  function drawHead() {
    const end = run.finished_at || (status === "running" ? Date.now() / 1000 : run.updated_at);
    mount(head,
      h("div.crumbs", h("a", { href: `#/runs?project=${encodeURIComponent(run.project)}` }, run.project), " › run"),
      h("div.page-head", h("h1", run.name || run.run_id), pill(status), verifyBadge, h("span.mono.muted", run.run_id), actions),
      h("div.page-head", { style: { marginTop: "-6px" } }, h("div.sub",
        h("span", "created ", ago(run.created_at)), h("span", `duration ${fmtDuration(end - run.created_at)}`),
        h("span", `step ${run.last_step >= 0 ? fmtNum(run.last_step) : "–"}`),
        run.host ? h("span", `host ${run.host}`) : null, run.group ? h("span", `group ${run.group}`) : null,
        run.tags.length ? h("span", run.tags.map((t) => h("span.tag", t))) : null), agentLine),
      run.error ? h("div.panel", { style: { borderLeft: "3px solid var(--err)", marginBottom: "12px" } },
        h("h2", "Error"), h("pre.code", run.error)) : null);
  }
  drawHead();

  const st = { smoothing: Number(ctx.route.query.get("smooth") || 0), log: ctx.route.query.get("log") === "1" };
  let grid = null, sysGrid = null;
  const chartsBox = h("div.charts");
  const toolbar = chartToolbar((s, what) => {
    if (what === "filter") { grid && grid.setFilter(s.filter); sysGrid && sysGrid.setFilter(s.filter); return; }
    st.smoothing = s.smoothing; st.log = s.log;
    replaceQuery({ tab: currentTab, smooth: st.smoothing || "", log: st.log ? "1" : "" });
    grid && grid.configure(st); sysGrid && sysGrid.configure(st);
  }, st);
  let currentTab = ctx.route.query.get("tab") || "charts";
  const t = tabs([
    { id: "charts", label: "Charts", render: (el) => mount(el, toolbar.el, chartsBox) },
    { id: "system", label: "System", render: (el) => renderSystem(el) },
    { id: "config", label: "Config", render: (el) => renderConfig(el, run) },
    { id: "code", label: "Code & env", render: (el) => renderCode(el, run, ctx) },
    { id: "lineage", label: "Artifacts & lineage", render: (el) => renderLineage(el, run, ctx) },
    { id: "verify", label: "Verification", render: (el) => renderVerify(el, run, ctx) },
  ], currentTab, (tab) => { currentTab = tab; replaceQuery({ tab: tab === "charts" ? "" : tab, smooth: st.smoothing || "", log: st.log ? "1" : "" }); });
  ctx.onDispose(t.detach);
  mount(ctx.root, head, t.el);

  function onKey(e) {
    if (e.target.closest("input, textarea, select") || e.metaKey || e.ctrlKey || e.altKey) return;
    if (e.key === "l") toolbar.toggleLog();
  }
  document.addEventListener("keydown", onKey);
  ctx.onDispose(() => document.removeEventListener("keydown", onKey));

  async function renderSystem(el) {
    const box = h("div.charts.small");
    mount(el, sysKeys.length ? h("p.muted", "Sampled by the SDK (psutil, NVML), against seconds since the run started. Drag to zoom.") : null, box);
    if (!sysKeys.length) { mount(box, empty("This run logged no system metrics.")); return; }
    const groupOf = (k) => {
      const g = k.slice(4).split(".")[0];
      return g === "gpu" ? `GPU ${k.slice(4).split(".")[1]}` : g.toUpperCase() === "CPU" ? "CPU" : g[0].toUpperCase() + g.slice(1);
    };
    const ordered = [...sysKeys].sort((a, b) => groupOf(a).localeCompare(groupOf(b)) || a.localeCompare(b));
    sysGrid = new MetricGrid(box, run.run_id, ordered, { ...st, height: 150, maxPoints: 400, signal: ctx.signal,
      steps: run.summary_stats, series: (await history).series,
      t0: run.created_at, groupOf });
    ctx.onDispose(() => sysGrid.destroy());
    await sysGrid.load();
  }

  // Curves first (the page's main content), then the rest in the background.
  grid = new MetricGrid(chartsBox, run.run_id, userKeys, { ...st, signal: ctx.signal,
    steps: run.summary_stats, series: (await history).series,
    onFirstDraw: () => performance.mark("assay:run-chart-rendered") });
  ctx.onDispose(() => grid && grid.destroy());
  const gridLoaded = grid.load();
  if (!userKeys.length) performance.mark("assay:run-chart-rendered");

  // Secondary reads wait for the curves: verification re-reads every metric row of the run
  // (a second of server time for a million points) and must not delay the first chart.
  gridLoaded.catch(() => {}).then(() => {
    if (!ctx.alive) return;
    loadAgent(run, agentLine, actions, ctx, () => status);
    loadVerify(run, verifyBadge, ctx);
  });

  if (status === "running") {
    // The run and its history were read in parallel: resume a little before the run's seq
    // (points already shown are dropped by step), so nothing read in between is missed.
    const since = cursorFor({ [run.run_id]: Math.max(-1, run.ingested_seq - 50) });
    const stream = follow({ run: [run.run_id], since, min_interval: 0.5 }, (ev, data) => {
      if ((ev !== "delta" && ev !== "rewind") || !data.runs) return;
      const d = data.runs[run.run_id];
      if (!d) return;
      if (ev === "rewind") { // resumed from a step: the dead attempt's tail goes
        if (grid) grid.rewind(d.from_step);
        return;
      }
      if (d.points) {
        const missing = [...(grid ? grid.append(filterKeys(d.points, false)) : []), ...(sysGrid ? sysGrid.append(filterKeys(d.points, true)) : [])];
        for (const k of missing) if (!keys.includes(k)) keys.push(k);
        if (missing.some((k) => !k.startsWith("sys/"))) newKeys();
      }
      if (d.last_step != null) run.last_step = d.last_step;
      if (d.status && d.status !== status) {
        status = d.status;
        run.finished_at = Date.now() / 1000;
        drawHead();
        setTimeout(() => loadVerify(run, verifyBadge, ctx), 1500);
      }
    });
    ctx.onDispose(() => stream.close());
  }

  // A key that appears mid-run gets its chart (the grid is rebuilt, cheap: one request).
  let rebuilding = false;
  async function newKeys() {
    if (rebuilding) return;
    rebuilding = true;
    await gridLoaded;
    const fresh = await api(`/api/runs/${encodeURIComponent(id)}`, { signal: ctx.signal });
    const ks = Object.keys(fresh.summary_stats || {}).filter((k) => !k.startsWith("sys/")).sort();
    grid.destroy();
    grid = new MetricGrid(chartsBox, run.run_id, ks, { ...st, signal: ctx.signal });
    await grid.load();
    rebuilding = false;
  }

  // The header follows a running run (duration, step, status) even between stream deltas.
  if (status === "running") {
    ctx.every(5000, async () => {
      const fresh = await api(`/api/runs/${encodeURIComponent(id)}`, { signal: ctx.signal });
      const changed = fresh.status !== status;
      Object.assign(run, { last_step: fresh.last_step, finished_at: fresh.finished_at, error: fresh.error });
      status = fresh.status;
      drawHead();
      if (changed) setTimeout(() => loadVerify(run, verifyBadge, ctx), 1500);
    });
  }
  await gridLoaded;
}

function filterKeys(points, sys) {
  return Object.fromEntries(Object.entries(points).filter(([k]) => k.startsWith("sys/") === sys));
}

async function loadAgent(run, el, actions, ctx, statusOf) {
  let ds;
  try {
    ds = (await api(`/api/decisions${qs({ trial_id: run.run_id, limit: 50 })}`, { signal: ctx.signal })).decisions;
  } catch (e) {
    return;
  }
  const launch = ds.find((d) => d.kind === "launch" || d.kind === "reevaluate");
  if (!launch) return;
  const stops = ds.filter((d) => d.kind === "stop" || d.kind === "override");
  mount(el, h("span", "launched by agent ", h("a.mono", { href: `#/agents/${launch.agent_id}` }, launch.agent_id), `: ${launch.summary}`),
    stops.map((d) => h("span", pill(d.kind), ` ${d.summary}`)));
  // Stopping a trial is for supervisors and the agent's owner (as the server decides).
  let allowed = can("supervisor");
  if (!allowed && can("researcher") && statusOf() === "running") {
    try {
      const agent = await api(`/api/agents/${encodeURIComponent(launch.agent_id)}`, { signal: ctx.signal });
      allowed = !!agent.owner && agent.owner === currentWho()?.name;
    } catch (e) {
      allowed = false;
    }
  }
  if (statusOf() === "running" && allowed && ctx.alive) {
    actions.append(h("button.btn.danger", { type: "button", title: "ask the agent to stop this run", onclick: async () => {
      const v = await dialog({ title: `Stop run ${run.name || run.run_id}?`, text: `Agent ${launch.agent_id} stops it at its next step.`, submit: "Stop run", danger: true });
      if (!v) return;
      try {
        const r = await api(`/api/runs/${encodeURIComponent(run.run_id)}/stop`, { method: "POST", body: { reason: v.reason } });
        toast(`Stop requested (override ${r.override_id}, ${r.status}).`, "ok");
        sentWarning(r);
      } catch (e) {
        toast(`${e.error}${e.hint ? " — " + e.hint : ""}`, "error", 8000);
      }
    } }, "Stop run"));
  }
}

async function loadVerify(run, badge, ctx) {
  try {
    const v = await api(`/api/verify${qs({ run_id: run.run_id })}`, { signal: ctx.signal });
    if (!v.sealed) mount(badge, h("span.pill", { title: "records are sealed when a run finishes" }, "not sealed yet"));
    else if (v.ok) mount(badge, h("span.pill.s-ok", { title: "signed record verified: config, summary, metrics, artifacts, code, environment" }, "✓ verified"));
    else mount(badge, h("span.pill.s-error", { title: v.problems.map((p) => p.reason).join("\n") }, `✗ ${v.problem_count} problem${v.problem_count === 1 ? "" : "s"}`));
  } catch (e) {
    mount(badge, h("span.pill", { title: e.error || "" }, "verification unavailable"));
  }
}

function renderConfig(el, run) {
  const filter = h("input", { type: "search", placeholder: "filter…", "data-filter": "" });
  const cfg = h("div"), sum = h("div");
  const stats = run.summary_stats || {};
  function draw() {
    const f = filter.value.trim().toLowerCase();
    mount(cfg, kvTable(run.config, { filter: f, empty: "No config." }));
    const rows = Object.keys(run.summary).filter((k) => !f || k.toLowerCase().includes(f))
      .sort((a, b) => (a.startsWith("sys/") - b.startsWith("sys/")) || a.localeCompare(b));
    mount(sum, rows.length ? h("table.data", h("thead", h("tr", ["Key", "Last", "Min", "Max", "Step"].map((x) => h("th", x)))),
      h("tbody", rows.map((k) => h("tr", h("td", k), h("td.num", fmtValue(run.summary[k])),
        h("td.num", fmtValue(stats[k]?.min)), h("td.num", fmtValue(stats[k]?.max)), h("td.num", fmtValue(stats[k]?.step))))))
      : empty("No summary."));
  }
  filter.addEventListener("input", draw);
  draw();
  mount(el, h("div.toolbar", filter), h("div.grid.cols-2", h("div.panel", h("h2", "Config"), cfg), h("div.panel", h("h2", "Summary"), h("div.table-wrap", sum))),
    run.notes ? h("div.panel", h("h2", "Notes"), h("p", run.notes)) : null);
}

function renderCode(el, run, ctx) {
  const git = run.git || {};
  const env = run.env || {};
  const { packages = [], environ = {}, ...rest } = env;
  const diffBox = h("div");
  const showDiff = git.diff_blob ? h("button.btn.small", { type: "button", onclick: async () => {
    showDiff.disabled = true;
    try {
      const text = await api(`/api/runs/${encodeURIComponent(run.run_id)}/diff`, { signal: ctx.signal });
      mount(diffBox, h("pre.code", String(text).split("\n").map((line) =>
        h(line.startsWith("@@") ? "span.hunk" : line.startsWith("+") ? "span.add" : line.startsWith("-") ? "span.del" : "span", line + "\n"))));
    } catch (e) {
      mount(diffBox, h("p.form-error", e.error));
    }
  } }, `show diff (${fmtBytes(git.diff_bytes)})`) : null;
  const pkgFilter = h("input", { type: "search", placeholder: `filter ${packages.length} packages…` });
  const pkgList = h("div.scroll");
  const drawPkgs = () => {
    const f = pkgFilter.value.trim().toLowerCase();
    const ps = packages.filter((p) => !f || p.toLowerCase().includes(f));
    mount(pkgList, ps.length ? h("table.kv", h("tbody", ps.map((p) => { const [n, v] = p.split("=="); return h("tr", h("th", n), h("td", v || "")); })))
      : empty("No packages."));
  };
  pkgFilter.addEventListener("input", drawPkgs);
  drawPkgs();
  mount(el, h("div.grid.cols-2",
    h("div.panel", h("h2", "Git"), Object.keys(git).length ? kvTable({ ...git, diff_blob: undefined }) : empty("Not started from a git checkout."),
      showDiff ? h("p", showDiff) : null, diffBox),
    h("div.panel", h("h2", "Environment"), kvTable({ ...rest, ...(rest.argv ? { argv: rest.argv.join(" ") } : {}) }, { empty: "No environment captured." }))),
  h("div.grid.cols-2",
    h("div.panel", h("h2", "Packages", h("span.count", String(packages.length))), h("div.toolbar", pkgFilter), pkgList),
    h("div.panel", h("h2", "Environment variables", h("span.count", String(Object.keys(environ).length)), h("span.right.muted", run.environ_hidden ? "values visible to the run's owner and supervisors" : "secret-looking variables and credentials are not recorded")),
      h("div.scroll", kvTable(environ, { empty: "None recorded." })))));
}

async function renderLineage(el, run, ctx) {
  mount(el, h("p.loading", "Loading lineage…"));
  const g = await api(`/api/lineage${qs({ node: `run:${run.run_id}`, direction: "both", depth: 3 })}`, { signal: ctx.signal });
  const me = `run:${run.run_id}`;
  const produced = g.edges.filter((e) => e.src === me).map((e) => e.dst);
  const used = g.edges.filter((e) => e.dst === me).map((e) => e.src);
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  const item = (node) => {
    const [, name, v] = node.split(":");
    const n = byId.get(node) || {};
    const type = n.type ? h("span.muted", ` ${n.type}`) : null;
    // A deleted version keeps its lineage, but its page and bytes are gone: no link.
    if (n.deleted === true) {
      return h("div.item.deleted", { dataset: { node } }, h("span.mono.gone", { title: "this artifact version was deleted" }, `${name}:${v}`),
        type, h("span.pill.s-deleted", { title: "this artifact version was deleted" }, "deleted"));
    }
    return h("div.item", { dataset: { node } }, h("a.mono", { href: `#/artifacts/${encodeURIComponent(name)}/${v}` }, `${name}:${v}`), type);
  };
  mount(el,
    h("div.grid.cols-2",
      h("div.panel", h("h2", "Used", h("span.count", String(used.length))), used.length ? h("div.list", used.map(item)) : empty("This run used no artifacts.")),
      h("div.panel", h("h2", "Produced", h("span.count", String(produced.length))), produced.length ? h("div.list", produced.map(item)) : empty("This run logged no artifacts."))),
    h("div.panel", h("h2", "Lineage", h("span.right.muted", "upstream ← run → downstream, 3 hops; click a node to open it")),
      g.nodes.length > 1 ? h("div.table-wrap", lineageGraph(g)) : empty("No lineage: the run neither used nor produced artifacts."),
      g.truncated ? h("p.muted", "Large graph: only the nearest nodes are shown.") : null));
}

async function renderVerify(el, run, ctx, fresh = false) {
  mount(el, h("p.loading", "Recomputing the signed record…"));
  const again = h("button.btn.small", { type: "button", onclick: () => renderVerify(el, run, ctx, true) }, "verify again");
  let v;
  try {
    v = await api(`/api/verify${qs({ run_id: run.run_id, fresh: fresh ? "true" : "" })}`, { signal: ctx.signal });
  } catch (e) {
    if (e instanceof ApiError && e.kind === "aborted") return;
    mount(el, h("div.panel", h("p.form-error", e.error), again));
    return;
  }
  mount(el, h("div.panel",
    h("h2", "Signed record"),
    !v.sealed ? h("p", pill("running"), " Not sealed yet: a run's record is canonicalised, hashed, chained and signed when it finishes.")
      : v.ok ? h("p.verify-ok", "✓ The signed record matches the stored config, summary, every metric row, artifact bytes, code and environment.")
        : h("div", h("p.verify-bad", `✗ ${v.problem_count} problem${v.problem_count === 1 ? "" : "s"} found`),
          h("table.data", h("thead", h("tr", ["Chain", "Record", "Problem"].map((x) => h("th", x)))),
            h("tbody", v.problems.map((p) => h("tr", h("td.mono", p.chain), h("td.num", `#${p.seq}`), h("td.wrap", p.reason)))))),
    h("p.muted", `status ${v.status} · records checked: ${v.checked} · verified at ${fmtTime(v.verified_at)}${v.cached ? " (recent result; tables unchanged since)" : ""}`),
    again,
    expander("what is checked", () => h("p.muted", "The record covers config, summary, status, a digest of all metric rows, the digests of artifacts produced and used, and the code and environment capture; it is chained to the previous record of the project and signed with the data directory's Ed25519 key (assay export-key)."))));
}
