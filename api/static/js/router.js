// Hash routing (#/runs/ID, #/agents/ID, #/compare?ids=a,b) and the page lifecycle: each page
// renders into the main element with a context whose timers, streams and requests are
// all released when the page is left, so nothing leaks between pages.
import { ApiError, isOnline } from "./api.js";
import { h, mount } from "./dom.js";

/** Parse location.hash into {path, parts, query}. */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const [path, q = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { path: "/" + parts.join("/"), parts, query: new URLSearchParams(q) };
}

/** Set the hash's query without adding a history entry or re-rendering. */
export function replaceQuery(params) {
  const { parts } = parseHash();
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v != null && v !== "" && !(Array.isArray(v) && !v.length)) q.set(k, Array.isArray(v) ? v.join(",") : v);
  }
  const s = q.toString();
  const hash = "#/" + parts.map(encodeURIComponent).join("/") + (s ? "?" + s : "");
  history.replaceState(null, "", hash);
  current.quiet = hash;
}

/** Navigate to a hash. */
export function go(hash) {
  location.hash = hash;
}

const current = { page: null, ctx: null, failed: false, quiet: null };

class PageContext {
  constructor(root, route) {
    this.root = root;
    this.route = route;
    this.ctl = new AbortController();
    this.signal = this.ctl.signal;
    this.disposers = [];
    this.reconnectHooks = [];
  }

  /** Run fn every ms while the page is shown and the tab visible (and once on reconnect). */
  every(ms, fn) {
    let busy = false;
    const tick = async () => {
      if (busy || document.hidden || this.signal.aborted) return;
      busy = true;
      try { await fn(); } catch (e) { if (!(e instanceof ApiError)) console.warn(e); }
      busy = false;
    };
    const t = setInterval(tick, ms);
    this.disposers.push(() => clearInterval(t));
    this.reconnectHooks.push(tick);
    return tick;
  }

  /** Release something when the page is left. */
  onDispose(fn) {
    this.disposers.push(fn);
  }

  get alive() {
    return !this.signal.aborted;
  }

  dispose() {
    this.ctl.abort();
    for (const d of this.disposers.splice(0)) {
      try { d(); } catch (e) { console.warn(e); }
    }
  }
}

/** Show an error on the page: what went wrong, the server's hint, and a way on. */
export function errorPanel(e, { title } = {}) {
  if (e instanceof ApiError && e.kind === "network") {
    return h("div.panel.error-panel", h("h2", "Server unreachable"),
      h("p", "The assay server does not answer. This page reconnects by itself as soon as it is back."),
      h("p.muted", "If it does not come back, check that `assay server` is running."));
  }
  if (e instanceof ApiError && e.kind === "auth") {
    return h("div.panel.error-panel", h("h2", "Sign in"), h("p", e.error),
      h("p.muted", "Enter a valid token in the sign-in form; this page continues from there."));
  }
  const status = e instanceof ApiError ? e.status : 0;
  return h("div.panel.error-panel",
    h("h2", title || (status === 404 ? "Not found" : status === 403 ? "Not allowed"
      : status === 400 ? "Invalid address" : "Something went wrong")),
    h("p", e.error || e.message || String(e)),
    e.hint ? h("p.hint", e.hint) : null,
    h("p", h("a", { href: "#/" }, "← Overview"), " · ", h("a", { href: "#/runs" }, "All runs")));
}

/**
 * Start routing.
 * @param {HTMLElement} root main element
 * @param {Array<[RegExp, (ctx: PageContext, ...m: string[]) => Promise<void>]>} routes
 * @param {(route: object) => void} onRoute called on every navigation (header highlight)
 */
export function start(root, routes, onRoute) {
  async function render() {
    if (current.quiet && current.quiet === location.hash) { current.quiet = null; return; }
    current.quiet = null;
    if (current.ctx) current.ctx.dispose();
    const route = parseHash();
    onRoute(route);
    const ctx = new PageContext(root, route);
    current.ctx = ctx;
    current.failed = false;
    mount(root, h("div.loading", "Loading…"));
    let found = false;
    for (const [re, page] of routes) {
      const m = re.exec(route.path);
      if (!m) continue;
      found = true;
      try {
        await page(ctx, ...m.slice(1).map(decodeURIComponent));
      } catch (e) {
        if (!ctx.alive || (e instanceof ApiError && e.kind === "aborted")) return;
        if (!(e instanceof ApiError)) console.error(e);
        current.failed = true;
        mount(root, errorPanel(e));
      }
      break;
    }
    if (!found) {
      mount(root, errorPanel(new ApiError(404, `no page ${route.path}`,
        "pages: #/ (overview), #/runs, #/runs/ID, #/agents/ID, #/compare?ids=A,B, #/artifacts")));
    }
  }
  window.addEventListener("hashchange", render);
  return {
    render,
    /** Re-render the current page (also right after replaceQuery, whose quiet marker only
     * suppresses the hashchange that a query change would otherwise cause). */
    refresh: () => { current.quiet = null; return render(); },
    /** After a reconnect: re-render a failed page, else let the page's pollers catch up. */
    reconnected() {
      if (!current.ctx) return;
      if (current.failed) render();
      else for (const f of current.ctx.reconnectHooks) f();
    },
    online: isOnline,
  };
}
