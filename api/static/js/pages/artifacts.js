// Artifact versions, one version's files, and its lineage (what it was made from, what was
// built on it).
import { api, qs } from "../api.js";
import { h, mount } from "../dom.js";
import { ago, fmtBytes, kvTable } from "../format.js";
import { lineageGraph } from "../graphs.js";
import { empty, navigable } from "../ui.js";

/** Render the list of artifact versions. */
export async function artifactsPage(ctx) {
  const r = await api(`/api/artifacts${qs({ limit: 2000 })}`, { signal: ctx.signal });
  const filter = h("input", { type: "search", placeholder: "filter by name, type or project…  ( / )", "data-filter": "" });
  const box = h("div.table-wrap");
  const rows = [...r.artifacts].reverse();
  function draw() {
    const f = filter.value.trim().toLowerCase();
    const shown = rows.filter((a) => !f || `${a.name} ${a.type} ${a.project}`.toLowerCase().includes(f));
    mount(box, shown.length ? h("table.data",
      h("thead", h("tr", ["Artifact", "Type", "Project", "Aliases", "Files", "Size", "Made by", "Created", "Digest"].map((x) => h("th", x)))),
      h("tbody", shown.map((a) => h("tr.clickable", { dataset: { key: `${a.name}/v${a.version}` }, onclick: () => { location.hash = `#/artifacts/${a.name}/v${a.version}`; } },
        h("td", h("a", { href: `#/artifacts/${encodeURIComponent(a.name)}/v${a.version}` }, `${a.name}:v${a.version}`)),
        h("td", a.type), h("td", a.project), h("td", a.aliases.map((x) => h("span.tag", x))),
        h("td.num", a.files), h("td.num", fmtBytes(a.size)),
        h("td", a.created_by ? h("a.mono", { href: `#/runs/${a.created_by}`, onclick: (e) => e.stopPropagation() }, a.created_by) : "–"),
        h("td.nowrap", ago(a.created_at)), h("td.mono.muted", a.digest.slice(0, 19) + "…")))))
      : empty(rows.length ? "No artifact matches." : "No artifacts yet: run.log_artifact(path, name=..., type=...)."));
  }
  filter.addEventListener("input", draw);
  draw();
  mount(ctx.root, h("div.page-head", h("h1", "Artifacts"), h("span.muted", `${r.total} versions`)), h("div.panel", h("div.toolbar", filter), box));
  const detach = navigable(box.querySelector("table") || h("table"), { open: (tr) => { location.hash = `#/artifacts/${tr.dataset.key}`; } });
  ctx.onDispose(detach);
}

/** Render one artifact version. */
export async function artifactPage(ctx, name, version) {
  const a = await api(`/api/artifacts/${encodeURIComponent(name)}/${encodeURIComponent(version)}`, { signal: ctx.signal });
  const graphBox = h("div", h("p.loading", "Loading lineage…"));
  mount(ctx.root,
    h("div.crumbs", h("a", { href: "#/artifacts" }, "Artifacts"), " › ", a.name),
    h("div.page-head", h("h1", a.id), h("span.tag", a.type), a.aliases.map((x) => h("span.tag", x)), h("span.mono.muted", a.digest)),
    h("div.grid.cols-2",
      h("div.panel", h("h2", "Version"), kvTable({ project: a.project, files: a.files, size: fmtBytes(a.size), made_by: a.created_by || "–",
        created: new Date(a.created_at * 1000).toLocaleString(), description: a.description || "–", ...(Object.keys(a.metadata).length ? { metadata: a.metadata } : {}) })),
      h("div.panel", h("h2", "Files", h("span.count", String(a.files))), h("div.scroll", h("table.data",
        h("thead", h("tr", ["Path", "Size", "Digest"].map((x) => h("th", x)))),
        h("tbody", a.manifest.map((f) => h("tr", h("td.mono", f.path), h("td.num", fmtBytes(f.size)), h("td.mono.muted", f.digest.slice(0, 19) + "…")))))))),
    h("div.panel", h("h2", "Lineage", h("span.right.muted", "made from ← version → built on it")), graphBox));
  const g = await api(`/api/lineage${qs({ node: a.node, direction: "both", depth: 4 })}`, { signal: ctx.signal });
  mount(graphBox, g.nodes.length > 1 ? h("div.table-wrap", lineageGraph(g)) : empty("No run produced or used this version yet."),
    g.truncated ? h("p.muted", "Large graph: only the nearest nodes are shown.") : null);
}
