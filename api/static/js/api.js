// The API client: the token, JSON requests, one error type, and the connection state.
//
// Every request carries "Authorization: Bearer <token>". A 401 means the token is missing,
// expired or revoked: the login form opens with the server's reason, and the page re-renders
// once a valid token is given. A network failure marks the server unreachable: a banner says
// so, /api/health is polled with backoff, and when it answers the page re-renders itself.

const KEY = "assay.token";
const bus = new EventTarget();

/** Subscribe to "auth" (needs a token: detail = reason), "login", "online", "offline". */
export function on(type, fn) {
  bus.addEventListener(type, (e) => fn(e.detail));
}

function emit(type, detail) {
  bus.dispatchEvent(new CustomEvent(type, { detail }));
}

/** The stored token (session storage first, then "remember me" local storage). */
export function token() {
  try {
    return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

/** Keep a token: in sessionStorage, or in localStorage when remember is set. */
export function setToken(t, remember) {
  forget();
  (remember ? localStorage : sessionStorage).setItem(KEY, t);
}

/** Drop the token from both storages. */
export function forget() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

/** An API failure: status (0 for the network), the server's error and hint. */
export class ApiError extends Error {
  constructor(status, error, hint = "", kind = "http") {
    super(error);
    this.status = status;
    this.error = error;
    this.hint = hint;
    this.kind = kind; // http | auth | network | aborted
  }
}

let online = true;
let probing = false;

/** Whether the last request reached the server. */
export function isOnline() {
  return online;
}

function markOnline() {
  if (!online) {
    online = true;
    emit("online");
  }
}

function markOffline() {
  if (online) {
    online = false;
    emit("offline");
  }
  probe();
}

async function probe() {
  if (probing) return;
  probing = true;
  let wait = 500;
  while (!online) {
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 5000);
    try {
      const r = await fetch("/api/health", { cache: "no-store" });
      if (r.ok) markOnline();
    } catch {
      /* still down */
    }
  }
  probing = false;
}

const early = new Map(); // path -> {at, promise}: reads started before the page asked

/**
 * Start a GET now for a page that will ask for it shortly (see prefetch.js). The page's
 * api(path) call takes it over if it comes within 10 s; otherwise it is dropped.
 * @returns {Promise<any>}
 */
export function prefetch(path) {
  const promise = api(path, { early: true });
  promise.catch(() => { /* reported when the page takes it over */ });
  early.set(path, { at: Date.now(), promise });
  return promise;
}

/**
 * A request to the API; resolves to the parsed JSON (or text for text/plain).
 * @param {string} path "/api/..." with its query
 * @param {{method?: string, body?: any, signal?: AbortSignal, tok?: string, text?: boolean}} [opts]
 */
export async function api(path, opts = {}) {
  const pre = !opts.early && !opts.method && !opts.tok && early.get(path);
  if (pre) {
    early.delete(path);
    if (Date.now() - pre.at < 10_000) {
      return pre.promise.catch((e) => {
        if (e instanceof ApiError && e.kind === "auth") emit("auth", e.error); // held back early
        throw e;
      });
    }
  }
  const headers = { Accept: "application/json" };
  const t = opts.tok ?? token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let body;
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  let r;
  try {
    r = await fetch(path, { method: opts.method || "GET", headers, body, signal: opts.signal,
      cache: "no-store" });
  } catch (e) {
    if (e && e.name === "AbortError") throw new ApiError(0, "aborted", "", "aborted");
    markOffline();
    throw new ApiError(0, "the server does not answer", "it may be restarting; this page retries by itself", "network");
  }
  markOnline();
  if (r.ok) {
    const type = r.headers.get("content-type") || "";
    try {
      return await (type.includes("json") ? r.json() : r.text());
    } catch (e) {
      // The page was left while the body was still arriving: as aborted as a fetch that
      // never answered (not an uncaught "signal is aborted without reason").
      if (e && e.name === "AbortError") throw new ApiError(0, "aborted", "", "aborted");
      if (e instanceof TypeError) {
        markOffline();
        throw new ApiError(0, "the server stopped answering mid-response", "this page retries by itself", "network");
      }
      throw e;
    }
  }
  let err = { error: `HTTP ${r.status}`, hint: "" };
  try {
    err = await r.json();
  } catch {
    /* not JSON */
  }
  if (r.status === 401) {
    if (!opts.tok && !opts.early) emit("auth", err.error || "sign in");
    throw new ApiError(401, err.error || "not signed in", err.hint, "auth");
  }
  if (r.status === 503) {
    markOffline();
  }
  throw new ApiError(r.status, err.error || `HTTP ${r.status}`, err.hint || "");
}

/** Build a query string from an object (arrays repeat the key; null/"" skipped). */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v == null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => u.append(k, x));
    else u.append(k, v);
  }
  const s = u.toString();
  return s ? `?${s}` : "";
}

/** Tell listeners a login happened (the router re-renders). */
export function loggedIn(who) {
  emit("login", who);
}

/** Report a dropped connection seen elsewhere (e.g. the live stream). */
export function reportOffline() {
  markOffline();
}

/** Report a refused token seen elsewhere (e.g. the live stream): opens the sign-in form. */
export function reportAuth(reason) {
  emit("auth", reason);
}
