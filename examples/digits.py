"""A real small training, tracked end to end: an MLP on scikit-learn's bundled digits.

``train(config, run)`` is the function an objective points at (``examples.digits:train``);
``python -m assay.examples.digits`` trains a few configurations and prints the runs table.
Large learning rates genuinely diverge (the loss becomes NaN): a diverging run is data.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import assay
import numpy as np

DEFAULTS: dict[str, Any] = {"lr": 0.05, "hidden": 64, "epochs": 30, "batch_size": 64,
                            "momentum": 0.9, "weight_decay": 1e-4, "seed": 0}


def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardized train/validation split of the 1,797 8x8 digit images (bundled data)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xva, ytr, yva = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    mean, std = xtr.mean(0), xtr.std(0)
    std[std < 1e-3] = 1.0  # pixels that are always blank in the training split
    return (xtr - mean) / std, (xva - mean) / std, ytr, yva


def train(config: dict[str, Any], run: Any) -> dict[str, float]:
    """Train with ``config`` and log ``train/loss``, ``val/loss``, ``val/acc`` per epoch.

    Stops early when ``run.should_stop()`` says so (an agent or a person asked).
    """
    import torch
    from torch import nn

    cfg = {**DEFAULTS, **config}
    if cfg.get("data") and hasattr(run, "use_artifact"):
        run.use_artifact(str(cfg["data"]))  # lineage: this run consumed that dataset version
    torch.manual_seed(int(cfg["seed"]))
    xtr, xva, ytr, yva = load_data(int(cfg["seed"]))
    dev = torch.device(str(cfg.get("device", "cpu")))
    xtr_t, ytr_t = torch.from_numpy(xtr).to(dev), torch.from_numpy(ytr).long().to(dev)
    xva_t, yva_t = torch.from_numpy(xva).to(dev), torch.from_numpy(yva).long().to(dev)
    hidden = int(cfg["hidden"])
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]), momentum=float(cfg["momentum"]),
                          weight_decay=float(cfg["weight_decay"]))
    lossf = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    bs = int(cfg["batch_size"])
    result = {"val/acc": 0.0, "val/loss": math.inf}
    for epoch in range(int(cfg["epochs"])):
        model.train()
        perm = torch.randperm(len(xtr_t), generator=gen).to(dev)
        total = 0.0
        for i in range(0, len(perm), bs):
            idx = perm[i : i + bs]
            opt.zero_grad()
            loss = lossf(model(xtr_t[idx]), ytr_t[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            logits = model(xva_t)
            vloss = lossf(logits, yva_t).item()
            acc = (logits.argmax(1) == yva_t).float().mean().item()
        result = {"train/loss": total / len(perm), "val/loss": vloss, "val/acc": acc}
        run.log({**result, "epoch": epoch}, step=epoch)
        if run.should_stop():
            break
    if cfg.get("save_model"):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.pt"
            torch.save(model.state_dict(), path)
            # Artifact names are shared by the data directory's projects: one per project.
            run.log_artifact(path, name=f"{run.project}-mlp", type="model",
                             metadata={"val/acc": result["val/acc"], "hidden": hidden})
    return result


def log_dataset(project: str) -> str:
    """Record the digits split as a versioned dataset artifact (a prep run), returning its
    reference; unchanged data makes no new version."""
    import tempfile
    from pathlib import Path

    xtr, xva, ytr, yva = load_data(0)
    with tempfile.TemporaryDirectory() as d, assay.init(project=project, name="prep-digits",
                                                       config={"split_seed": 0}) as run:
        path = Path(d) / "digits"
        path.mkdir()
        np.savez(path / "train.npz", x=xtr, y=ytr)
        np.savez(path / "val.npz", x=xva, y=yva)
        art = run.log_artifact(path, name="digits-data", type="dataset", aliases=["prod"],
                               metadata={"train": len(ytr), "val": len(yva)})
    return f"digits-data:v{art.version}"


def main(argv: list[str] | None = None) -> None:
    """The main job: version the dataset, run the digits objective with an agent on a local
    Ray, then print the best config, lineage, verification and where everything lives."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--objective", default=str(Path(__file__).with_name("digits.yaml")))
    ap.add_argument("--trials", type=int, help="override the objective's trial budget")
    a = ap.parse_args(argv)
    from ..agents.objective import Objective
    from ..agents.runner import run_objective
    from ..cli import console, live_progress

    obj = Objective.from_yaml(a.objective)
    data_ref = log_dataset(obj.project)
    spec = obj.to_dict()
    spec["space"] = {**spec["space"], "data": data_ref}
    if a.trials:
        spec["budget"] = {**spec["budget"], "trials": a.trials}
    obj = Objective.from_dict(spec)
    with live_progress(obj) as show:
        res = run_objective(obj, on_progress=show)
    if res.best_value is None:  # every trial stopped early or failed (a warm-started
        # stopper on a directory with earlier sweeps can stop a two-trial sweep whole)
        console.print(f"no trial completed with a {obj.metric} (trials: {res.trials})")
    else:
        console.print(f"best {obj.metric} = {res.best_value:.4f} (run {res.best_run}), "
                      "config:")
        console.print({k: v for k, v in (res.best_config or {}).items()})
    from .. import cli
    from ..sdk.settings import data_dir

    # The agent ran here, on this machine's data directory: read it there.
    cli.runs(project=obj.project, dir=data_dir(), limit=8)
    api = assay.Api(data_dir())
    nodes, _ = api.lineage(data_ref, direction="down")
    console.print(f"lineage: {data_ref} fed {nodes.filter(nodes['kind'] == 'run').height} runs "
                  f"(`assay lineage {data_ref} --down`)")
    checked, problems = api.verify()
    console.print(f"verify: {checked} signed run records, {len(problems)} problems (`assay verify`)")
    console.print(f"decisions and their reasons: `assay decisions {res.agent_id}`")
    if res.report:
        console.print(f"sweep report: {res.report}")
    console.print(f"data directory: {api.dir}")


if __name__ == "__main__":
    main()
