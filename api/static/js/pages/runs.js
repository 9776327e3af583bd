// All runs: server-side filtering, sorting and paging of GET /api/runs (10,000 runs or
// more stay instant), chosen config/summary columns, and a selection to compare.
import { api, qs } from "../api.js";
import { debounce, h, mount } from "../dom.js";
import { ago, fmtDuration, fmtNum, fmtValue, pill } from "../format.js";
import { objectiveMetrics, rankKeys, stepLike } from "../keys.js";
import { replaceQuery } from "../router.js";
import { saveSelected, selected } from "../session.js";
import { empty, navigable } from "../ui.js";

const LIMIT = 50;
const STATUSES = ["running", "completed", "failed", "crashed", "stopped"];
/** Render the runs page. */
export async function runsPage(ctx) {
  const q = ctx.route.query;
  const st = {
    project: q.get("project") || "",
    status: (q.get("status") || "").split(",").filter(Boolean),
    search: q.get("q") || "",
    filter: q.get("filter") || "",
    sort: q.get("sort") || "created_at",
    order: q.get("order") || "desc",
    offset: Number(q.get("offset") || 0) || 0,
    cols: (q.get("cols") || "").split(",").filter(Boolean),
  };
  const sel = selected();
  const projectSel = h("select", { title: "project", onchange: () => { st.project = projectSel.value; st.offset = 0; st.cols = []; loadColumns().then(load); } },
    h("option", { value: "" }, "all projects"));
  const search = h("input", { type: "search", placeholder: "name contains…  ( / )", value: st.search, "data-filter": "" });
  const filter = h("input", { type: "text", placeholder: "filters: config.lr<0.01; summary.val/acc>0.9", value: st.filter,
    title: "COLUMN OP VALUE, OP in = != < <= > >= ~ (contains); separate several with ;" });
  const chips = h("div.status-chips");
  const colSel = h("select", { title: "add a column", onchange: () => { if (colSel.value) { st.cols.push(colSel.value); colSel.value = ""; load(); } } });
  const compareBtn = h("button.btn.primary", { type: "button", onclick: compare, title: "compare the selected runs (c)" });
  const tableBox = h("div.table-wrap");
  const pager = h("div.pager");
  const err = h("p.form-error");
  mount(ctx.root,
    h("div.page-head", h("h1", "Runs"), h("span#runs-total.muted"), h("div.actions", compareBtn,
      h("button.btn", { type: "button", onclick: () => { sel.clear(); saveSelected(sel); drawSel(); tableBox.querySelectorAll("input[type=checkbox]").forEach((c) => { c.checked = false; }); } }, "Clear selection"))),
    h("div.panel", h("div.toolbar", projectSel, search, filter, chips, colSel), err, tableBox, pager));

  search.addEventListener("input", debounce(() => { st.search = search.value.trim(); st.offset = 0; load(); }, 250));
  filter.addEventListener("change", () => { st.filter = filter.value.trim(); st.offset = 0; load(); });
  function drawChips() {
    mount(chips, STATUSES.map((s) => h("button.chip" + (st.status.includes(s) ? ".on" : ""), { type: "button",
      onclick: () => { st.status = st.status.includes(s) ? st.status.filter((x) => x !== s) : [...st.status, s]; st.offset = 0; drawChips(); load(); } }, s)));
  }
  function drawSel() {
    compareBtn.textContent = `Compare (${sel.size})`;
    compareBtn.disabled = sel.size < 1;
  }
  function compare() {
    if (sel.size) location.hash = `#/compare?ids=${[...sel].map(encodeURIComponent).join(",")}`;
  }
  drawChips();
  drawSel();

  let columns = [];
  async function loadColumns() {
    const [c, objective] = await Promise.all([api(`/api/runs/columns${qs({ project: st.project })}`, { signal: ctx.signal }),
      st.cols.length ? [] : objectiveMetrics(st.project, ctx.signal)]);
    // min/max of a metric are summary_min.* / summary_max.* columns, not offered here.
    columns = c.columns.filter((x) => (x.startsWith("config.") || x.startsWith("summary.")) &&
      !x.startsWith("summary.sys/"));
    if (!st.cols.length) {
      // The agents' objective metrics first, then other metrics; counters (epoch, step)
      // only when the runs logged nothing else.
      const metrics = rankKeys(columns.filter((x) => x.startsWith("summary.")).map((x) => x.slice(8)), objective);
      const better = metrics.filter((k) => objective.includes(k) || !stepLike(k));
      st.cols = [...(better.length ? better : metrics).slice(0, 3).map((k) => `summary.${k}`), ...columns.filter((x) => x.startsWith("config.")).slice(0, 3)];
    }
    mount(colSel, h("option", { value: "" }, "+ column"), columns.filter((x) => !st.cols.includes(x)).map((x) => h("option", { value: x }, x)));
  }

  let detach = null;
  let lastSig = "";
  let marked = false;
  async function load(quiet = false) {
    const filters = st.filter.split(";").map((s) => s.trim()).filter(Boolean);
    if (st.search) filters.push(`name~${st.search}`);
    replaceQuery({ project: st.project, status: st.status, q: st.search, filter: st.filter, sort: st.sort,
      order: st.order === "desc" ? "" : st.order, offset: st.offset || "", cols: st.cols });
    let page;
    try {
      page = await api(`/api/runs${qs({ project: st.project, status: st.status, filter: filters, sort: st.sort,
        order: st.order, limit: LIMIT, offset: st.offset })}`, { signal: ctx.signal });
      err.textContent = "";
    } catch (e) {
      if (e.status === 400) { err.textContent = `${e.error}${e.hint ? " — " + e.hint : ""}`; return; }
      throw e;
    }
    if (!ctx.alive) return;
    const sig = JSON.stringify([page.total, page.runs.map((r) => [r.run_id, r.status, r.updated_at]), st.cols, st.sort, st.order]);
    if (quiet && sig === lastSig) return;
    lastSig = sig;
    document.getElementById("runs-total").textContent = `${fmtNum(page.total)} matching`;
    drawTable(page);
    if (!marked) { marked = true; performance.mark("assay:runs-rendered"); }
    const end = Math.min(st.offset + LIMIT, page.total);
    mount(pager, `${page.total ? st.offset + 1 : 0}–${end} of ${fmtNum(page.total)}`,
      h("button.btn.small", { type: "button", disabled: st.offset === 0, onclick: () => { st.offset = Math.max(0, st.offset - LIMIT); load(); } }, "← prev"),
      h("button.btn.small", { type: "button", disabled: end >= page.total, onclick: () => { st.offset += LIMIT; load(); } }, "next →"));
  }

  function header(label, col) {
    const on = st.sort === col;
    return h("th.sortable" + (on ? ".sorted" : "") + (on && st.order === "asc" ? ".asc" : ""), {
      title: `sort by ${col}`, onclick: () => {
        if (st.sort === col) st.order = st.order === "desc" ? "asc" : "desc";
        else { st.sort = col; st.order = "desc"; }
        st.offset = 0; load();
      } }, label);
  }

  function drawTable(page) {
    if (!page.runs.length) {
      mount(tableBox, empty(page.total === 0 && !st.status.length && !st.search && !st.filter && !st.project
        ? "No runs yet." : "No run matches these filters."));
      return;
    }
    const extra = st.cols.map((c) => {
      const th = header(c.replace(/^(config|summary)\./, ""), c);
      th.append(h("span.muted", { title: "remove column", style: { marginLeft: "4px", cursor: "pointer" },
        onclick: (e) => { e.stopPropagation(); st.cols = st.cols.filter((x) => x !== c); loadColumns().then(() => load()); } }, "×"));
      th.title = c;
      return th;
    });
    const rows = page.runs.map((r) => {
      const box = h("input", { type: "checkbox", checked: sel.has(r.run_id), title: "select for comparison (x)",
        onclick: (e) => e.stopPropagation(),
        onchange: () => { box.checked ? sel.add(r.run_id) : sel.delete(r.run_id); saveSelected(sel); drawSel(); } });
      const end = r.finished_at || (r.status === "running" ? Date.now() / 1000 : r.updated_at);
      return h("tr.clickable", { dataset: { key: r.run_id }, onclick: () => { location.hash = `#/runs/${r.run_id}`; } },
        h("td", box),
        h("td", h("a", { href: `#/runs/${r.run_id}`, onclick: (e) => e.stopPropagation() }, r.name || r.run_id), h("div.muted.mono", r.run_id)),
        h("td", pill(r.status)), h("td", r.project),
        h("td.nowrap", ago(r.created_at)), h("td.num", fmtDuration(end - r.created_at)),
        h("td.num", r.last_step >= 0 ? fmtNum(r.last_step) : "–"),
        st.cols.map((c) => {
          const v = c.startsWith("config.") ? dig(r.config, c.slice(7)) : (r.summary || {})[c.slice(8)];
          return h(typeof v === "number" ? "td.num" : "td.trunc", { title: fmtValue(v) }, fmtValue(v));
        }));
    });
    mount(tableBox, h("table.data",
      h("thead", h("tr", h("th", ""), header("Name", "name"), header("Status", "status"), header("Project", "project"),
        header("Created", "created_at"), h("th", "Duration"), header("Step", "last_step"), extra)),
      h("tbody", rows)));
    if (detach) detach();
    detach = navigable(tableBox.querySelector("table"), {
      open: (tr) => { location.hash = `#/runs/${tr.dataset.key}`; },
      toggle: (tr) => { const c = tr.querySelector("input[type=checkbox]"); c.checked = !c.checked; c.dispatchEvent(new Event("change")); },
    });
  }

  function onKey(e) {
    if (e.target.closest("input, textarea, select") || e.metaKey || e.ctrlKey || e.altKey) return;
    if (e.key === "c") compare();
  }
  document.addEventListener("keydown", onKey);
  ctx.onDispose(() => { document.removeEventListener("keydown", onKey); if (detach) detach(); });

  const [projects] = await Promise.all([api("/api/projects", { signal: ctx.signal }), loadColumns()]);
  for (const p of projects.projects) projectSel.append(h("option", { value: p.project, selected: p.project === st.project }, `${p.project} (${fmtNum(p.runs)})`));
  await load();
  ctx.every(5000, () => load(true));
}

/** A value at a dotted path of a nested object. */
/** A config value by its column name: the literal key first ("a.b"), else the dotted path,
 * or a JSON list path (["a","b"]) for a key the API had to name apart from a dotted one. */
export function dig(obj, path) {
  if (obj && path in obj) return obj[path];
  let cur = obj;
  let parts = path.split(".");
  if (path.startsWith("[")) { try { parts = JSON.parse(path); } catch { /* a plain key */ } }
  for (const p of parts) {
    if (cur == null || typeof cur !== "object") return undefined;
    cur = cur[p];
  }
  return cur;
}
