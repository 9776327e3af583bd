// Which metric a page shows first: the objective's (an agent's metric), else a real metric
// before counters such as epoch or step, and never a system metric while another exists.
import { api, qs } from "./api.js";

const STEP_LIKE = /(^|[/._-])(epochs?|steps?|global_step|iters?|iterations?|batch(es|_idx)?|samples|examples|_step|_runtime|_timestamp|timestamp|runtime|time|wall_time|elapsed)$/i;

/** Whether a key counts progress (epoch, step, global_step, …) rather than measuring it. */
export function stepLike(key) {
  return STEP_LIKE.test(key);
}

/**
 * The keys in the order a default is taken from: the preferred ones (objective metrics, in
 * the order given), then other metrics, then step-like keys, then system metrics; the given
 * order kept within each.
 */
export function rankKeys(keys, preferred = []) {
  const rank = (k) => {
    const p = preferred.indexOf(k);
    if (p >= 0) return p - preferred.length; // before every other
    return k.startsWith("sys/") ? 3 : stepLike(k) ? 2 : 1;
  };
  return keys.map((k, i) => [rank(k), i, k]).sort((x, y) => x[0] - y[0] || x[1] - y[1]).map((e) => e[2]);
}

/**
 * The metrics of the agents' objectives in a project (all projects: ""), the metric of
 * agents with the most trials first; [] when they cannot be read.
 */
export async function objectiveMetrics(project, signal) {
  try {
    const r = await api(`/api/agents${qs({ project })}`, { signal });
    return metricsOf(r.agents);
  } catch (e) {
    if (e.kind === "aborted") throw e;
    return [];
  }
}

/**
 * The objective metrics of the agents that launched some of these runs (trials), the most
 * common first; a few runs are asked about (one decision each names its agent).
 */
export async function trialMetrics(runIds, signal, sample = 8) {
  try {
    const [agents, ...ds] = await Promise.all([api("/api/agents", { signal }),
      ...runIds.slice(0, sample).map((id) => api(`/api/decisions${qs({ trial_id: id, limit: 1 })}`, { signal })
        .catch((e) => { if (e.kind === "aborted") throw e; return { decisions: [] }; }))]);
    const n = new Map();
    for (const d of ds) for (const x of d.decisions.slice(0, 1)) n.set(x.agent_id, (n.get(x.agent_id) || 0) + 1);
    return metricsOf(agents.agents.filter((a) => n.has(a.agent_id)).map((a) => ({ ...a, trials_total: n.get(a.agent_id) })));
  } catch (e) {
    if (e.kind === "aborted") throw e;
    return [];
  }
}

function metricsOf(agents) {
  const w = new Map();
  for (const a of agents || []) if (a.metric) w.set(a.metric, (w.get(a.metric) || 0) + (a.trials_total || 0) + 1);
  return [...w.keys()].sort((x, y) => w.get(y) - w.get(x));
}
