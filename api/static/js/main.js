// Boot: sign-in, theme, connection banner, keyboard shortcuts and the routes.
import { ApiError, api, forget, isOnline, loggedIn, on, setToken, token } from "./api.js";
import { h, mount } from "./dom.js";
import { refreshAgo } from "./format.js";
import { start } from "./router.js";
import { setWho } from "./session.js";
import { toast } from "./ui.js";

const $ = (id) => document.getElementById(id);

// Pages load on first use (boot.js already asked for the current page's modules, so the
// first render has no extra round trip); the others are fetched when the browser is idle.
const PAGES = {
  overview: () => import("./pages/overview.js"),
  runs: () => import("./pages/runs.js"),
  run: () => import("./pages/run.js"),
  agent: () => import("./pages/agent.js"),
  compare: () => import("./pages/compare.js"),
  artifacts: () => import("./pages/artifacts.js"),
};
const lazy = (page, name) => async (ctx, ...args) => (await PAGES[page]())[name](ctx, ...args);

const routes = [
  [/^\/$/, lazy("overview", "overviewPage")],
  [/^\/agents$/, lazy("overview", "overviewPage")],
  [/^\/runs$/, lazy("runs", "runsPage")],
  [/^\/runs\/([^/]+)$/, lazy("run", "runPage")],
  [/^\/agents\/([^/]+)$/, lazy("agent", "agentPage")],
  [/^\/compare$/, lazy("compare", "comparePage")],
  [/^\/artifacts$/, lazy("artifacts", "artifactsPage")],
  [/^\/artifacts\/([^/]+)\/([^/]+)$/, lazy("artifacts", "artifactPage")],
];

function prefetchPages() {
  const idle = window.requestIdleCallback || ((f) => setTimeout(f, 1500));
  idle(() => Object.values(PAGES).forEach((load) => load().catch(() => {})), { timeout: 5000 });
}

function highlight(route) {
  const section = route.parts[0] || "overview";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === section || (section === "agents" && a.dataset.nav === "overview"));
  }
}

const router = start($("page"), routes, highlight);
// A stream that lost its place: re-render the page from the API, so no gap stays on screen.
window.addEventListener("assay:stream-reset", () => router.refresh());

// -- sign-in ---------------------------------------------------------------------------------
let waiting = false;

function showLogin(reason) {
  $("login-reason").textContent = reason || "";
  $("login").hidden = false;
  $("logout").hidden = true;
  $("who").replaceChildren();
  $("login-token").focus();
  waiting = true;
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const t = $("login-token").value.trim();
  if (!t) return;
  try {
    const who = await api("/api/whoami", { tok: t });
    setToken(t, $("login-remember").checked);
    $("login-token").value = "";
    $("login").hidden = true;
    signedIn(who);
    waiting = false;
    loggedIn(who);
    router.refresh();
  } catch (err) {
    $("login-reason").textContent = err.kind === "network"
      ? "The server does not answer; try again in a moment."
      : `${err.error}${err.hint ? ". " + err.hint : ""}`;
  }
});

function signedIn(who) {
  setWho(who);
  mount($("who"), h("span.who-name", who.name), h("span.role", who.role));
  $("logout").hidden = false;
}

$("logout").addEventListener("click", () => {
  forget();
  setWho(null);
  showLogin("Signed out.");
  mount($("page"), h("div.panel.error-panel", h("h2", "Signed out"), h("p", "Sign in with a token to continue.")));
});

on("auth", (reason) => {
  if (token()) forget();
  setWho(null);
  if (!waiting || $("login").hidden) showLogin(reason);
  else $("login-reason").textContent = reason;
});

// -- connection ------------------------------------------------------------------------------
function conn(state) {
  const el = $("conn");
  el.dataset.state = state;
  el.querySelector(".conn-text").textContent = state === "online" ? "live" : state === "offline" ? "offline" : state;
  const banner = $("banner");
  if (state === "offline") {
    banner.textContent = "The server does not answer. Showing the last data received; reconnecting…";
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

on("offline", () => conn("offline"));
on("online", () => {
  conn("online");
  if (token() && !document.querySelector("#who .who-name")) whoami();
  router.reconnected();
});

// -- theme -----------------------------------------------------------------------------------
function cycleTheme() {
  const order = ["auto", "light", "dark"];
  const cur = localStorage.getItem("assay.theme") || "auto";
  const next = order[(order.indexOf(cur) + 1) % order.length];
  if (next === "auto") {
    localStorage.removeItem("assay.theme");
    delete document.documentElement.dataset.theme;
  } else {
    localStorage.setItem("assay.theme", next);
    document.documentElement.dataset.theme = next;
  }
  $("theme").title = `Theme: ${next} (t)`;
  router.refresh(); // charts read their colours from the theme
}

$("theme").addEventListener("click", cycleTheme);
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  if (!localStorage.getItem("assay.theme")) router.refresh();
});

// -- keyboard --------------------------------------------------------------------------------
const SHORTCUTS = [
  ["g o", "overview"], ["g r", "runs"], ["g c", "compare"], ["g a", "artifacts"],
  ["/", "focus the page's filter"], ["j / k", "move in a table"], ["Enter", "open the row"],
  ["x", "select the row (runs)"], ["c", "compare the selected runs"], ["1–9", "switch tabs"],
  ["l", "log scale (charts)"], ["t", "theme"], ["r", "reload the page's data"], ["?", "this help"],
  ["Esc", "close a dialog"],
];

function help() {
  if (document.querySelector(".help-back")) return;
  const back = h("div.modal-back.help-back", { onclick: () => back.remove() },
    h("div.dialog", h("h2", "Keyboard"),
      h("table.kv", h("tbody", SHORTCUTS.map(([k, v]) => h("tr", h("th", h("kbd", k)), h("td", v))))),
      h("div.actions", h("button.btn", { type: "button" }, "Close"))));
  document.body.append(back);
}

$("help").addEventListener("click", help);

let prefix = "";
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    document.querySelector(".help-back")?.remove();
    return;
  }
  if (e.target.closest("input, textarea, select, [contenteditable]") || e.metaKey || e.ctrlKey || e.altKey) return;
  if (document.querySelector(".modal-back:not([hidden])")) return;
  if (prefix === "g") {
    prefix = "";
    const to = { o: "#/", r: "#/runs", c: "#/compare", a: "#/artifacts" }[e.key];
    if (to) { location.hash = to; e.preventDefault(); }
    return;
  }
  if (e.key === "g") { prefix = "g"; setTimeout(() => { prefix = ""; }, 1200); return; }
  if (e.key === "?") { help(); e.preventDefault(); }
  else if (e.key === "t") cycleTheme();
  else if (e.key === "r") router.refresh();
  else if (e.key === "/") {
    const f = document.querySelector("[data-filter]");
    if (f) { f.focus(); e.preventDefault(); }
  }
});

// A request that fails outside a page's first render (a click, a filter, a poll): aborted
// ones (the page was left) are expected, auth and network failures have their own banner
// and form; anything else is shown in a toast instead of disappearing into the console.
window.addEventListener("unhandledrejection", (e) => {
  if (!(e.reason instanceof ApiError)) return;
  e.preventDefault();
  if (e.reason.kind === "http") toast(`${e.reason.error}${e.reason.hint ? " — " + e.reason.hint : ""}`, "error", 8000);
});

// -- start -----------------------------------------------------------------------------------
async function boot() {
  performance.mark("assay:main-start");
  window.__assayStarted = true; // prefetch.js, if it runs later, leaves the reads to the pages
  if (!token()) {
    conn("online");
    showLogin("");
    mount($("page"), h("div.panel.error-panel", h("h2", "Sign in"), h("p", "This dashboard needs an API token.")));
    return;
  }
  conn(isOnline() ? "online" : "offline"); // an early read may have found the server down
  whoami();
  await router.render(); // in parallel with whoami: the first paint waits for one round trip only
  prefetchPages();
}

async function whoami() {
  try {
    signedIn(await api("/api/whoami"));
  } catch (e) {
    /* "auth" opened the sign-in form; "network" shows the banner and retries */
  }
}

// "… ago" times stay current without redrawing the lists that hold them.
setInterval(() => { if (!document.hidden) refreshAgo(document); }, 5000);

boot();
