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
