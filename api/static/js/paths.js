// The API reads of each page's first render, built in one place: the early prefetch
// (prefetch.js, which runs before the page modules have loaded) and the pages ask for the
// very same paths, so the pages find their data already on the way.
import { qs } from "./api.js";

/** Points to ask for per chart: about two per pixel. */
export const MAX_POINTS = 1000;
/** Beyond this many points a curve is reduced by min/max per bucket (vectorised, and it keeps
 *  every spike) rather than LTTB, whose per-bucket loop costs far more on long curves. */
const MINMAX_ABOVE = 50_000;

/** The downsampling method for curves of about n points. */
export function methodFor(n) {
  return n > MINMAX_ABOVE ? "minmax" : "lttb";
}

/** GET of the overview's fleet summary. */
export const fleetPath = () => `/api/fleet${qs({ decisions: 12 })}`;

/** GET of the overview's recently active runs. */
export const recentRunsPath = () => `/api/runs${qs({ sort: "updated_at", order: "desc", limit: 15 })}`;

/** GET of one run. */
export const runPath = (id) => `/api/runs/${encodeURIComponent(id)}`;

/** The metric keys a run page charts first (everything but system metrics), sorted. */
export function userKeys(run) {
  return Object.keys(run.summary_stats || {}).filter((k) => !k.startsWith("sys/")).sort();
}

/** GET of every curve of a run, downsampled (min/max: the lengths are not known yet). A run
 *  page asks for it together with the run itself, saving a round trip before the charts. */
export const runHistoryPath = (id) =>
  `/api/runs/${encodeURIComponent(id)}/history${qs({ max_points: MAX_POINTS, method: "minmax" })}`;

/** GET of downsampled curves of `keys`; `stats` (summary statistics) sizes the method. */
export function historyPath(id, keys, stats, maxPoints = MAX_POINTS, extra = {}) {
  const longest = Math.max(0, ...keys.map((k) => (stats?.[k]?.step ?? 0) + 1));
  return `/api/runs/${encodeURIComponent(id)}/history${qs({ key: keys, max_points: maxPoints,
    method: methodFor(longest), ...extra })}`;
}
