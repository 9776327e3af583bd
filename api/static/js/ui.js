// Shared widgets: dialogs (the reason every override asks for), toasts, keyboard-navigable
// tables, and tabs.
import { expander, h, mount } from "./dom.js";
import { ago, kvTable, pill } from "./format.js";

/**
 * A modal form. Resolves to the form's values, or null when cancelled (Esc, Cancel).
 * @param {{title: string, text?: string, fields?: HTMLElement[], submit?: string,
 *          danger?: boolean, reason?: boolean, validate?: (data: object) => string,
 *          send?: (data: object) => Promise<string>}} o
 *   reason (default true): a required "why" field, recorded in the audit trail
 *   validate: a message keeps the dialog open and is shown in it
 *   send: called on submit with the values; a message it resolves to (the server refused)
 *     keeps the dialog open with the message, so the values can be corrected
 */
export function dialog(o) {
  return new Promise((resolve) => {
    const reason = o.reason === false ? null
      : h("textarea", { name: "reason", rows: 3, required: true, maxlength: 2000,
        placeholder: "Why? (recorded in the audit trail with your name)" });
    const err = h("p.form-error");
    const ok = h("button.btn" + (o.danger ? ".danger" : ".primary"), { type: "submit" }, o.submit || "Confirm");
    const form = h("form.dialog.ask", { method: "dialog", novalidate: true },
      h("h2", o.title), o.text ? h("p", o.text) : null,
      ...(o.fields || []),
      reason ? h("label.field", h("span", "Reason"), reason) : null,
      err,
      h("div.actions", h("button.btn", { type: "button", onclick: () => close(null) }, "Cancel"), ok));
    const back = h("div.modal-back", { onmousedown: (e) => { if (e.target === back) close(null); } }, form);
    function close(v) {
      back.remove();
      document.removeEventListener("keydown", onKey, true);
      resolve(v);
    }
    function onKey(e) {
      if (e.key === "Escape") { e.stopPropagation(); close(null); }
    }
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (ok.disabled) return;
      const data = Object.fromEntries(new FormData(form).entries());
      if (reason && !String(data.reason || "").trim()) { err.textContent = "A reason is required."; reason.focus(); return; }
      if (o.validate) {
        const msg = o.validate(data);
        if (msg) { err.textContent = msg; return; }
      }
      if (o.send) {
        err.textContent = "";
        ok.disabled = true;
        let msg = "";
        try { msg = await o.send(data); } finally { ok.disabled = false; }
        if (msg) { err.textContent = msg; return; }
      }
      close(data);
    });
    document.addEventListener("keydown", onKey, true);
    document.body.append(back);
    (form.querySelector("input, textarea, select") || ok).focus();
  });
}

/** A labelled input for dialogs. */
export function field(label, input, hint) {
  return h("label.field", h("span", label), input, hint ? h("small.muted", hint) : null);
}

/**
 * The server's warning on an override it stored (202), e.g. that the agent has not reported
 * for minutes and may be dead: the override waits until it steps again. Shown apart from the
 * "sent" toast, in the warning style, and for longer.
 */
export function sentWarning(r) {
  if (r && r.warning) toast(`Warning: ${r.warning}`, "warn", 15000);
}

/** A short message in the corner (kind: ok | warn | error | info). */
export function toast(text, kind = "info", ms = 4000) {
  let box = document.getElementById("toasts");
  if (!box) { box = h("div#toasts"); document.body.append(box); }
  const t = h(`div.toast.${kind}`, { role: "status" }, text);
  box.append(t);
  setTimeout(() => t.remove(), ms);
}

/**
 * Keyboard navigation of a table's rows: j/k (or arrows) move, Enter opens, x toggles.
 * @param {HTMLTableElement} table
 * @param {{open?: (tr: HTMLElement) => void, toggle?: (tr: HTMLElement) => void}} o
 * @returns {() => void} detach
 */
export function navigable(table, o = {}) {
  let idx = -1;
  const rows = () => [...table.querySelectorAll("tbody tr[data-key]")];
  function focus(i) {
    const rs = rows();
    if (!rs.length) return;
    idx = Math.max(0, Math.min(rs.length - 1, i));
    rs.forEach((r, j) => r.classList.toggle("cursor", j === idx));
    rs[idx].scrollIntoView({ block: "nearest" });
  }
  function onKey(e) {
    if (e.target.closest("input, textarea, select, [contenteditable]") || e.metaKey || e.ctrlKey || e.altKey) return;
    if (document.querySelector(".modal-back:not([hidden])")) return;
    const rs = rows();
    if (e.key === "j" || e.key === "ArrowDown") { focus(idx + 1); e.preventDefault(); }
    else if (e.key === "k" || e.key === "ArrowUp") { focus(idx - 1); e.preventDefault(); }
    else if (e.key === "Enter" && idx >= 0 && rs[idx] && o.open) { o.open(rs[idx]); e.preventDefault(); }
    else if (e.key === "x" && idx >= 0 && rs[idx] && o.toggle) { o.toggle(rs[idx]); e.preventDefault(); }
  }
  document.addEventListener("keydown", onKey);
  return () => document.removeEventListener("keydown", onKey);
}

/**
 * Tabs with lazily rendered panels; number keys 1..9 switch.
 * @param {Array<{id: string, label: string, render: (el: HTMLElement) => void}>} tabs
 * @param {string} active id of the first shown tab
 * @param {(id: string) => void} [onChange]
 * @returns {{el: HTMLElement, show: (id: string) => void, detach: () => void}}
 */
export function tabs(tabs, active, onChange) {
  const bar = h("nav.tabs", { role: "tablist" });
  const body = h("div.tab-body");
  const built = new Map();
  const buttons = new Map();
  function show(id) {
    const t = tabs.find((x) => x.id === id) || tabs[0];
    for (const [k, b] of buttons) b.setAttribute("aria-selected", String(k === t.id));
    for (const [k, p] of built) p.hidden = k !== t.id;
    if (!built.has(t.id)) {
      const panel = h("div.tab-panel", { role: "tabpanel" });
      built.set(t.id, panel);
      body.append(panel);
      t.render(panel);
    }
    if (onChange) onChange(t.id);
  }
  tabs.forEach((t, i) => {
    const b = h("button.tab", { role: "tab", type: "button", title: `${t.label} (${i + 1})`, onclick: () => show(t.id) },
      h("kbd", String(i + 1)), " ", t.label);
    buttons.set(t.id, b);
    bar.append(b);
  });
  function onKey(e) {
    if (e.target.closest("input, textarea, select") || e.metaKey || e.ctrlKey || e.altKey) return;
    if (document.querySelector(".modal-back:not([hidden])")) return;
    const n = Number(e.key);
    if (n >= 1 && n <= tabs.length) show(tabs[n - 1].id);
  }
  document.addEventListener("keydown", onKey);
  show(active);
  return { el: h("div.tabs-wrap", bar, body), show, detach: () => document.removeEventListener("keydown", onKey) };
}

/** An empty-state line inside a panel. */
export function empty(text) {
  return h("p.empty", text);
}

/** Replace the contents of a panel body. */
export function fill(el, ...children) {
  mount(el, ...children);
}

/** One decision: kind, agent, trial, summary, and its evidence behind a disclosure. */
export function decisionItem(d, { showAgent = true, names = null } = {}) {
  // names: agent id -> objective name (the overview knows them): people read objectives.
  const name = names && names.get(d.agent_id);
  return h("div.item",
    h("div.line", pill(d.kind),
      showAgent ? (name ? h("a", { href: `#/agents/${d.agent_id}`, title: d.agent_id }, name)
        : h("a.mono", { href: `#/agents/${d.agent_id}` }, d.agent_id)) : null,
      d.trial_id ? h("a.mono", { href: `#/runs/${d.trial_id}` }, d.trial_id) : null,
      h("span.when", ago(d.time))),
    h("div.line", h("span.grow.wrap", { title: d.summary }, d.summary)),
    Object.keys(d.explanation || {}).length
      ? expander("evidence", () => h("div.evidence", kvTable(d.explanation))) : null);
}
