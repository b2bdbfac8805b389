"""Optional Weights & Biases logging of a finished run (the `wandb` extra).

The client is imported only when logging is asked for, so stageprobe works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stageprobe.errors import UserInputError
from stageprobe.metrics._catalog import higher_is_better, label
from stageprobe.report.findings import artifact_paths
from stageprobe.report.render import load_run
from stageprobe.report.schema import CSV_COLUMNS, sort_stages


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise UserInputError("W&B logging needs the wandb client: pip install 'stageprobe[wandb]'") from None
    return wandb


def log_to_wandb(run_dir: str | Path, project: str = "stageprobe", entity: str | None = None,
                 name: str | None = None, mode: str | None = None, wandb_dir: str | Path | None = None,
                 tags: tuple[str, ...] = ()) -> str:
    """Log config, per-stage metrics, the metrics table, verdicts and artifact images of a run.

    Per-stage metrics are logged with `stage_index` as the step (pipeline order), so W&B draws
    each probe's decay curve. `mode` is passed to `wandb.init` ("offline", "online", "disabled");
    None lets WANDB_MODE decide. Returns the run's URL, or its local directory when offline.
    """
    wandb = _import_wandb()
    run_dir = Path(run_dir)
    results, rows = load_run(run_dir)
    config = {
        "model": results.get("model"), "weights_random": results.get("weights_random"),
        "protocol": results.get("protocol"), "suite": results.get("suite"),
        "stages": results.get("stages"), **(results.get("config") or {}),
    }
    run = wandb.init(project=project, entity=entity, name=name or run_dir.name, config=config, mode=mode,
                     dir=str(wandb_dir) if wandb_dir else None,
                     tags=[*tags, *(["random-weights"] if results.get("weights_random") else [])])
    try:
        run.define_metric("stage_index")
        own = [r for r in rows if r.of_model and r.value is not None]
        for key, metric in sorted({(f"{r.experiment}/{r.probe}/{r.metric}", r.metric) for r in own}):
            # the summary keeps each curve's best stage, the right way round for its metric
            run.define_metric(key, step_metric="stage_index", summary="max" if higher_is_better(metric) else "min")
        run.summary["metric_labels"] = {r.metric: label(r.metric) for r in own}
        stages = sort_stages({r.stage for r in own})
        for index, stage in enumerate(stages):
            values = {f"{r.experiment}/{r.probe}/{r.metric}": r.value for r in own if r.stage == stage}
            run.log({"stage_index": index, **values})
        table = wandb.Table(columns=list(CSV_COLUMNS))
        for r in rows:
            table.add_data(r.experiment, r.stage, r.probe, r.metric, r.value, r.ci_low, r.ci_high, r.n,
                           r.control, r.model, r.unavailable_reason or "", r.note, r.variant)
        images = {
            f"artifacts/{Path(p).stem}": wandb.Image(str(run_dir / p))
            for p in artifact_paths(results) if p.lower().endswith(".png") and (run_dir / p).is_file()
        }
        run.log({"metrics": table, **images})
        run.summary["stage_names"] = stages
        run.summary["recommendation"] = results.get("recommendation")
        run.summary["decision_matrix"] = (results.get("decision_matrix") or {}).get("colour")
        for key, verdict in (results.get("verdicts") or {}).items():
            run.summary[f"verdict/{key}"] = verdict.get("display")
            run.summary[f"best/{key}"] = verdict.get("value")
            run.summary[f"best_stage/{key}"] = verdict.get("stage")
        return str(run.url or run.dir)
    finally:
        run.finish()
