"""The figures of a sweep report: one row per trial (:class:`TrialRow`), best-so-far and
regret curves, parameter importance, the compute used, and what early stopping saved and
may have cost (projections of stopped trials' finals, and a replay of the completed trials
through the objective's stoppers). Pure functions of the rows, the objective's spec and the
agent's decisions; :mod:`assay.agents.report` reads those from the graph and renders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..policies import TrialResult, TrialStatus
from . import report_html as _h

if TYPE_CHECKING:
    from ..store.control import Decision

__all__ = ["MIN_IMPORTANCE_TRIALS", "TrialRow", "best_so_far", "compute_used", "importance",
           "savings", "tunable"]

#: fANOVA over fewer completed trials says nothing (Optuna itself accepts two).
MIN_IMPORTANCE_TRIALS = 3


@dataclass
class TrialRow:
    """One trial as the report shows it.

    Attributes:
        trial_id: The trial's id, which is also its run's id.
        index: Launch order, from 1.
        config: The config it ran with.
        status: ``completed``, ``stopped``, ``failed``, ``running`` or ``pending``.
        final: The objective value of a completed trial.
        last: The last curve value (a stopped trial's value when it was stopped).
        curve: ``(step, value)`` points (the full curve when the store has it).
        method: How it was chosen (``random``, ``botorch qLogNEI``, ``botorch LogEI``, ``pinned by a person``).
        launched_s: Launch time, seconds since the sweep started.
        ended_s: End time, seconds since the sweep started.
        wall_s: Wall seconds of all its attempts.
        cpu_s: CPU-seconds (reserved CPUs x wall seconds).
        gpu_s: GPU-seconds.
        run_name: Its run's display name ("" when the store has no run).
    """

    trial_id: str
    index: int
    config: dict[str, Any]
    status: str
    final: float | None = None
    last: float | None = None
    curve: list[tuple[float, float]] = field(default_factory=list)
    method: str = ""
    launched_s: float | None = None
    ended_s: float | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    gpu_s: float = 0.0
    run_name: str = ""


def tunable(spec: dict[str, Any], trials: list[TrialRow]) -> list[str]:
    """The parameters the search varied (every config key when the space cannot be read)."""
    from ..policies import as_space

    try:
        return list(as_space(dict(spec.get("space", {}))).tunable)
    except Exception:  # noqa: BLE001 - a report never fails on an odd space
        return sorted({k for t in trials for k in t.config})


def best_so_far(trials: list[TrialRow], mode: str) -> dict[str, list[dict[str, Any]]]:
    """Best value so far and regret after each trial, in launch order (``by_index``) and in
    the order trials ended (``by_time``), through :func:`assay.policies.regret_curve`.

    Only completed trials count: a stopped trial's last value is not its result. Regret is
    the gap to the sweep's final best (the true optimum is unknown)."""
    from ..policies.explain import regret_curve

    sign = 1.0 if mode == "max" else -1.0
    finals = [t.final for t in trials if t.final is not None]
    optimum = max(finals, key=lambda v: sign * v) if finals else None

    def curve(rows: list[TrialRow]) -> list[dict[str, Any]]:
        hist = [TrialResult(t.trial_id, {}, TrialStatus.COMPLETED if t.final is not None
                            else TrialStatus.FAILED, (), t.final) for t in rows]
        out = regret_curve(hist, mode=mode, optimum=optimum)
        for p, t in zip(out, rows):
            p.update(trial=t.index, t=t.ended_s, status=t.status,
                     value=t.final if t.final is not None else t.last)
            p.setdefault("regret", None)
        return out

    ended = sorted((t for t in trials if t.ended_s is not None), key=lambda t: t.ended_s or 0.0)
    return {"by_index": curve(trials), "by_time": curve(ended)}


def importance(trials: list[TrialRow], spec: dict[str, Any],
               mode: str) -> tuple[dict[str, float], str]:
    """fANOVA importances over the completed trials, with a note when there are too few."""
    from ..policies.explain import param_importance

    done = [TrialResult(t.trial_id, t.config, TrialStatus.COMPLETED, (), t.final)
            for t in trials if t.final is not None]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return {}, (f"parameter importance needs at least {MIN_IMPORTANCE_TRIALS} completed "
                    f"trials; this sweep has {len(done)}")
    try:
        imp = param_importance(done, dict(spec.get("space", {})), mode=mode)
    except Exception as e:  # noqa: BLE001 - importance is a nicety, never a failure
        return {}, f"parameter importance could not be computed: {getattr(e, 'message', e)}"
    if not imp:
        return {}, "the search space has no tunable parameter"
    note = (f"fANOVA over {len(done)} completed trials" +
            (": with so few trials, read these as rough" if len(done) < 10 else ""))
    return imp, note


def compute_used(trials: list[TrialRow], spec: dict[str, Any], duration: float | None,
                 ledger: dict[str, Any]) -> dict[str, Any]:
    """Trials by status, wall clock, CPU- and GPU-hours (from the agent's budget ledger,
    else from the runs' start and end times)."""
    by_status: dict[str, int] = {}
    for t in trials:
        by_status[t.status] = by_status.get(t.status, 0) + 1
    wall = sum(t.wall_s for t in trials)
    conc = int(spec.get("concurrency") or 1)
    return {"trials": len(trials), "by_status": by_status, "sweep_wall_s": duration,
            "trial_wall_s": wall, "cpu_hours": sum(t.cpu_s for t in trials) / 3600.0,
            "gpu_hours": sum(t.gpu_s for t in trials) / 3600.0, "concurrency": conc,
            "utilization": (wall / (duration * conc)) if duration else None,
            "budget": dict(spec.get("budget") or {}),
            "source": "the agent's budget ledger" if ledger.get("runs") else
            "the runs' start and end times"}


def _full_length(trials: list[TrialRow], spec: dict[str, Any]) -> tuple[int | None, str]:
    done = [len(t.curve) for t in trials if t.status == "completed" and t.curve]
    if done:
        return max(done), "the longest completed trial"
    space = dict(spec.get("space", {}))
    for name in ("epochs", "steps", "max_steps", "max_epochs"):
        v = space.get(name)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return int(v), f"the objective's {name}"
    return None, ""


def _project(t: TrialRow, ev: dict[str, Any], done: list[TrialRow]
             ) -> tuple[float | None, tuple[float, float] | None, str]:
    """A stopped trial's projected final value: the learned stopper's prediction when it made
    one, else its value when stopped plus what completed trials gained from that point on."""
    pred, iv = _h.as_float(ev.get("predicted_final")), ev.get("interval")
    if pred is not None:
        bounds = (float(iv[0]), float(iv[1])) if isinstance(iv, list) and len(iv) == 2 else None
        return pred, bounds, "learned stopper's prediction"
    k = len(t.curve)
    if t.last is None or k == 0:
        return None, None, ""
    g = sorted(c.final - c.curve[k - 1][1] for c in done
               if c.final is not None and len(c.curve) >= k and math.isfinite(c.curve[k - 1][1]))
    if len(g) < 2:
        return None, None, ""
    med = (g[(len(g) - 1) // 2] + g[len(g) // 2]) / 2
    return (t.last + med, (t.last + g[0], t.last + g[-1]),
            f"value when stopped + completed trials' gain from point {k} ({len(g)} trials)")


def _replay(trials: list[TrialRow], spec: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Replay the completed trials (whose outcome is known) through the objective's stoppers
    (:func:`assay.policies.replay`): the regret early stopping would have cost on them."""
    from ..policies.replay import replay
    from .factory import make_stopper
    from .objective import Objective

    done = [t for t in trials if t.status == "completed" and t.curve and t.final is not None]
    if not spec.get("stoppers"):
        return None, "No stoppers were configured, so there is nothing to replay."
    if len(done) < 2:
        return None, ("Replay needs at least 2 completed trials with full curves; "
                      f"this sweep has {len(done)}.")
    if sum(len(t.curve) for t in done) > 20_000:
        return None, "Replay skipped: the completed curves are too long to replay quickly."
    try:
        stopper = make_stopper(Objective.from_dict(spec))
        if stopper is None:
            return None, "No stoppers were configured, so there is nothing to replay."
        rep = replay(stopper, [TrialResult(t.trial_id, t.config, TrialStatus.COMPLETED,
                                           t.curve, t.final) for t in done],
                     concurrency=int(spec.get("concurrency") or 1))
    except Exception as e:  # noqa: BLE001 - a replay is an estimate, never a failure
        return None, f"Replay unavailable: {getattr(e, 'message', e)}"
    out = {**rep.summary(), "best_value": rep.best_value, "kept_value": rep.kept_value}
    note = (f"Replay of the {rep.n_trials} completed trials through the same stoppers: they "
            f"would have stopped {len(rep.stopped)} and saved {rep.saved_fraction:.0%} of "
            "their points; " + ("the best trial would still have finished (regret 0)."
                                if rep.best_trial_kept else
                                "the best trial would have been stopped (regret "
                                f"{_h.fmt_num(abs(rep.regret or 0.0))})."))
    return out, note


def _regret_note(stopped: list[dict[str, Any]], best: float | None, sign: float
                 ) -> tuple[float | None, str]:
    proj = [s for s in stopped if s["projected"] is not None]
    if not stopped:
        return 0.0, "No regret from stopping: nothing was stopped."
    if best is None or not proj:
        return None, ("The regret cost of stopping cannot be estimated: no projection of the "
                      "stopped trials' final values is possible yet.")
    top = max(proj, key=lambda s: sign * s["projected"])
    gap = max(0.0, sign * (top["projected"] - best))
    risky = sum(1 for s in proj if s["may_beat_best"])
    text = (f"Estimated regret cost: {_h.fmt_num(gap)}: trial #{top['index']} was projected to "
            f"reach {top['projection']}, beyond the best found ({_h.fmt_num(best)})." if gap > 0
            else "Estimated regret cost: 0. No stopped trial was projected to beat the best "
            f"found ({_h.fmt_num(best)}); the most promising, #{top['index']}, was projected to "
            f"{top['projection']}.")
    if risky:
        text += f" {risky} stopped trial(s) had an optimistic bound past the best."
    return gap, text


def savings(trials: list[TrialRow], spec: dict[str, Any], mode: str,
            decisions: list[Decision]) -> dict[str, Any]:
    """What early stopping saved (points, wall time and CPU-hours, against running every
    stopped trial to the full length) and what it may have cost in regret: projections of
    the stopped trials' finals, and a replay of the completed trials."""
    sign = 1.0 if mode == "max" else -1.0
    full, source = _full_length(trials, spec)
    done = [t for t in trials if t.final is not None]
    finals = [t.final for t in done if t.final is not None]
    best = max(finals, key=lambda v: sign * v) if finals else None
    stops = {d.trial_id: dict(d.explanation) for d in decisions if d.kind == "stop"}
    stopped: list[dict[str, Any]] = []
    for t in (t for t in trials if t.status == "stopped"):
        pts = len(t.curve)
        saved = max(0, full - pts) if full else 0
        proj, iv, how = _project(t, _h.stop_evidence(stops.get(t.trial_id, {})), done)
        hi = None if proj is None else max(iv or (proj,), key=lambda v: sign * v)
        stopped.append({
            "trial_id": t.trial_id, "index": t.index, "points": pts, "saved_points": saved,
            "saved_s": saved * t.wall_s / pts if pts else 0.0,
            "saved_cpu_s": saved * t.cpu_s / pts if pts else 0.0, "value": t.last,
            "projected": proj, "interval": iv, "how": how,
            "projection": _h.with_interval(proj, iv),
            "beats_best": best is not None and proj is not None and sign * (proj - best) > 0,
            "may_beat_best": best is not None and hi is not None and sign * (hi - best) > 0})
    used = sum(len(t.curve) for t in trials)
    saved_pts = sum(s["saved_points"] for s in stopped)
    total = used + saved_pts
    wall_s = sum(s["saved_s"] for s in stopped)
    cpu_h = sum(s["saved_cpu_s"] for s in stopped) / 3600.0
    frac = saved_pts / total if total else 0.0
    if not stopped:
        headline = "No trial was stopped early, so stopping saved nothing."
    elif not full:
        headline = (f"{len(stopped)} trial(s) were stopped, but the full length of a trial is "
                    "unknown (no completed trial, no epochs/steps in the space).")
    else:
        headline = (f"{len(stopped)} of {len(trials)} trials were stopped early. Running them to "
                    f"the full {full} points ({source}) would have taken {saved_pts} more "
                    f"points: stopping saved {frac:.0%} of {total} points, about "
                    f"{_h.fmt_duration(wall_s)} of trial time and {cpu_h:.3g} CPU-hours.")
    cost, note = _regret_note(stopped, best, sign)
    replayed, replay_note = _replay(trials, spec)
    return {"full_points": full, "full_source": source, "stopped": stopped, "used_points": used,
            "without_stopping_points": total, "saved_points": saved_pts, "saved_fraction": frac,
            "saved_wall_s": wall_s, "saved_cpu_hours": cpu_h, "headline": headline,
            "regret_cost": cost, "regret_note": note, "replay": replayed,
            "replay_note": replay_note}
