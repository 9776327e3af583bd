"""A fast synthetic trainer: a smooth objective of (x, y) reached along a learning curve.

``train(config, run)`` logs ``score`` (to maximise; best 1.0 at x=0.3, y=0.7) once per
step, sleeping ``step_s`` seconds per step, and honours ``run.should_stop()``. Used by tests
and benchmarks of the agents, where real training would only add noise and minutes.
"""

from __future__ import annotations

import math
import time
from typing import Any


def target(x: float, y: float) -> float:
    return math.exp(-((x - 0.3) ** 2 + (y - 0.7) ** 2) / 0.08)


def train(config: dict[str, Any], run: Any) -> dict[str, float]:
    steps = int(config.get("steps", 10))
    final = target(float(config.get("x", 0.5)), float(config.get("y", 0.5)))
    score = 0.0
    for step in range(steps):
        score = final * (1 - math.exp(-3.0 * (step + 1) / steps))
        run.log({"score": score}, step=step)
        time.sleep(float(config.get("step_s", 0.02)))
        if run.should_stop():
            break
    return {"score": score}
