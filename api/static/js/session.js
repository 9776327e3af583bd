// Who is signed in (from GET /api/whoami), for showing only the controls a role may use.

const RANKS = { viewer: 0, researcher: 1, supervisor: 2, admin: 3 };
let who = null;

/** Remember the signed-in principal ({token_id, name, role}) or null. */
export function setWho(w) {
  who = w;
}

/** The signed-in principal, or null. */
export function currentWho() {
  return who;
}

/** Whether the signed-in token has at least this role. */
export function can(role) {
  return !!who && (RANKS[who.role] ?? -1) >= RANKS[role];
}

const SEL_KEY = "assay.selected";

/** The runs selected for comparison (kept for the session). */
export function selected() {
  try { return new Set(JSON.parse(sessionStorage.getItem(SEL_KEY) || "[]")); } catch { return new Set(); }
}

/** Keep the selection. */
export function saveSelected(s) {
  sessionStorage.setItem(SEL_KEY, JSON.stringify([...s].slice(-50)));
}
