"""The time a run will take, estimated from measured costs (`_costs.json`, written by
`benchmarks/plan_costs.py` on the machine it names).

The cost model, and why it has this shape:

- **Extraction.** A forward that stops after the deepest stage a store keeps runs every module up to
  it. Each module's CPU seconds per sample follow `a + b·x` for its stage kind (patch embedding,
  window-attention block, full-attention block, merger/connector, LLM layer), with x = tokens × width²
  (a block's matrix products are tokens × width × width); a and b come from the same kind measured at
  two widths (the tiny preset's and Qwen2.5-VL-7B's), so both measured points are reproduced exactly.
  What is not inside a stage's module (preprocessing, the processor, writing the store) is a cost per
  input pixel. The pixel baseline's stages are a cost per input pixel as well.
- **Probe fits.** Each (probe, task, options) costs `c · n^α · (tokens·width)^β` CPU seconds for a dataset
  of n samples, with α and β fitted to fits at two image counts and two widths (the law is measured,
  not assumed; the file keeps each point and the law's largest miss on them). Controls and extra probe
  seeds are fits of the same size. Fits are single-threaded (`probes.small_model_threads`).
- **Wall time** ≈ CPU seconds / the cores extraction may use, plus fit CPU seconds / the probe workers.
  The run overlaps the two, so the sum is an upper bound when the machine is otherwise idle.

No GPU cost has been measured: on CUDA the estimate says so and gives no number.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageprobe.models import StageInfo, StageModel
from stageprobe.probes import mixed_precision_probes
from stageprobe.suites._seeds import probe_seeds
from stageprobe.suites._spec import ExperimentSpec, probes_for

if TYPE_CHECKING:
    from stageprobe.suites._measure import Measurement

COSTS_FILE = Path(__file__).with_name("_costs.json")
#: the stage kinds whose modules cost time; every other stage reads what an earlier module made
KINDS = ("patch embed", "window block", "full-attention block", "merger", "LLM layer")


def stage_kind(name: str, description: str, hook: str = "output") -> str | None:
    """The cost kind of the module a stage is read from, or None where reading it costs nothing
    (an input hook, a final norm: the module before it did the work)."""
    if hook != "output":
        return None
    if name.startswith("pixels."):
        return "pixels"
    if name in ("vision.patch_embed", "vision.embed"):
        return "patch embed"
    if re.fullmatch(r"vision\.block\.\d+", name):
        return "window block" if "window" in description else "full-attention block"
    if name in ("vision.post_merge", "vision.post_projector") or name.startswith("vision.deepstack."):
        return "merger"
    if re.fullmatch(r"language\.layer\.\d+(\.before_deepstack)?", name):
        return "LLM layer"
    return None


def fit_key(probe: str, task: str, options: Sequence[tuple[str, Any]]) -> str:
    """How `_costs.json` names a fit's cost: probe, task and the options it is fitted with."""
    extra = ",".join(f"{k}={v}" for k, v in sorted(options))
    return f"{probe}/{task}" + (f"[{extra}]" if extra else "")


def precision_key(key: str, precision: str) -> str:
    """The cost key of a fit in the run's probe precision: a mixed-precision probe fitted in bfloat16 has its
    own measured law (`key@bfloat16`); every other fit costs the same in either precision."""
    probe = key.split("/", 1)[0]
    return f"{key}@{precision}" if precision != "float32" and probe in mixed_precision_probes() else key


@dataclass(frozen=True)
class Costs:
    """The measured cost laws of one machine (the contents of `_costs.json`)."""

    provenance: dict[str, Any]
    #: kind → (a, b): CPU seconds per sample = a + b × tokens × width²
    extraction: dict[str, tuple[float, float]]
    #: CPU seconds per input pixel outside the stage modules, and of the pixel baseline
    overhead_per_pixel: float
    pixels_per_pixel: float
    #: fit key → (c, α, β): CPU seconds = c × n^α × (tokens × width)^β
    fits: dict[str, tuple[float, float, float]]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Costs:
        extraction = data["extraction"]
        return cls(dict(data["provenance"]),
                   {kind: (law["a"], law["b"]) for kind, law in extraction["kinds"].items()},
                   extraction["overhead_cpu_s_per_pixel"], extraction["pixels_cpu_s_per_pixel"],
                   {key: (law["c"], law["alpha"], law["beta"]) for key, law in data["fits"].items()})

    def module_seconds(self, kind: str | None, tokens: int, dim: int) -> float:
        if kind is None or kind == "pixels" or kind not in self.extraction:
            return 0.0
        a, b = self.extraction[kind]
        return a + b * tokens * dim * dim

    def law(self, key: str) -> tuple[float, float, float] | None:
        """(c, α, β) of a fit key; a bfloat16 key not measured (a machine without native bfloat16 wrote
        the file) falls back to the float32 law, an upper bound."""
        return self.fits.get(key, self.fits.get(key.split("@", 1)[0]))

    def fit_seconds(self, key: str, samples: int, tokens: int, dim: int) -> float | None:
        law = self.law(key)
        if law is None:
            return None
        c, alpha, beta = law
        return c * samples**alpha * float(tokens * dim) ** beta


@cache
def load_costs(path: Path = COSTS_FILE) -> Costs | None:
    """The measured costs, or None where no file has been written (then `plan` gives no time)."""
    return Costs.from_json(json.loads(path.read_text())) if path.is_file() else None


def forward_costs(model: StageModel, costs: Costs, input_size: tuple[int, int, int]) -> dict[str, float]:
    """CPU seconds per sample of a forward stopped after each stage (all modules before it included)."""
    frames, height, width = input_size
    pixels = frames * height * width
    infos = model.stages_for(height, width, frames)
    table = getattr(model, "stage_table", None)
    hooks = {spec.name: spec.hook for spec in table(height, width, frames)} if table else {}
    if not hooks:  # the pixel baseline: no modules, one pass over the pixels
        return {info.name: pixels * costs.pixels_per_pixel for info in infos}
    total, reached = pixels * costs.overhead_per_pixel, {}
    for info in infos:
        total += costs.module_seconds(stage_kind(info.name, info.description, hooks.get(info.name, "output")),
                                      info.tokens, info.dim)
        reached[info.name] = total
    return reached


@dataclass(frozen=True)
class FitPlan:
    """The fits one probe makes at one stage of one model variant: `count` fits (seeds and controls)."""

    variant: str
    family: str
    stage: str
    key: str
    samples: int
    tokens: int
    dim: int
    count: int
    #: CPU seconds of one fit, None where no cost was measured for this probe
    cpu_s: float | None


def planned_fits(measurement: Measurement, specs: Sequence[ExperimentSpec], costs: Costs | None) -> list[FitPlan]:
    """Every fit the run submits, as `Measurement._submit` does: probe seeds and (on the main model)
    controls; a fit an earlier experiment already made on the same data is not counted again."""
    config, suite = measurement.config, measurement.suite
    seen: set[tuple[str, str, str, str]] = set()
    fits: list[FitPlan] = []
    shapes: dict[tuple[str, str], dict[str, StageInfo]] = {}
    for spec in specs:
        dataset = measurement.dataset(spec.family)
        unlabelled = set(getattr(dataset, "unlabelled_tasks", ()))
        probes = [p for p in probes_for(spec, config.protocol) if p.task not in unlabelled]
        for which in measurement.variants():
            if (which, spec.family) not in shapes:
                first = dataset[0]
                frames = first.frames or [first.image]
                shapes[(which, spec.family)] = {i.name: i for i in measurement.model(which).stages_for(
                    frames[0].size[1], frames[0].size[0], len(frames))}
            infos = shapes[(which, spec.family)]
            for stage in measurement.experiment_stages(spec, which):
                for probe in (p for p in probes if p.reads(stage)):
                    options = dict(probe.options)
                    if config.size == "quick":
                        options.update(suite.quick_probe_options.get(probe.probe, {}))
                    key = fit_key(probe.probe, probe.task, tuple(options.items()))
                    if (which, spec.family, stage, key) in seen:
                        continue
                    seen.add((which, spec.family, stage, key))
                    controls = suite.controls_at(probe, stage, config.size) \
                        if which == "main" and measurement.probe_controls else ()
                    # the probe and each of its controls, over the same probe seeds
                    count = probe_seeds(suite, probe, stage, config.size, config.seeds) * (1 + len(controls))
                    info = infos[stage]
                    cost_key = precision_key(key, config.probe_precision)
                    cpu_s = costs.fit_seconds(cost_key, len(dataset), info.tokens, info.dim) if costs else None
                    fits.append(FitPlan(which, spec.family, stage, key, len(dataset), info.tokens, info.dim,
                                        count, cpu_s))
    return fits


@dataclass
class TimeEstimate:
    """Extraction and fitting time of a run, in CPU seconds and as wall seconds on this machine."""

    device: str
    extraction_cpu_s: float
    fit_cpu_s: float
    fits: int
    #: fits whose probe has no measured cost (not in the estimate)
    unmeasured_fits: int
    cores: int
    workers: int
    forwards: int
    measured_on: dict[str, Any]

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"

    @property
    def extraction_wall_s(self) -> float | None:
        return None if self.on_gpu else self.extraction_cpu_s / self.cores

    @property
    def fit_wall_s(self) -> float | None:
        return None if self.on_gpu else self.fit_cpu_s / self.workers

    @property
    def wall_s(self) -> float | None:
        extraction, fit = self.extraction_wall_s, self.fit_wall_s
        return None if extraction is None or fit is None else extraction + fit

    def as_json(self) -> dict[str, Any]:
        return {"estimate": True, "device": self.device, "extraction_cpu_s": round(self.extraction_cpu_s, 1),
                "fit_cpu_s": round(self.fit_cpu_s, 1), "extraction_wall_s": _rounded(self.extraction_wall_s),
                "fit_wall_s": _rounded(self.fit_wall_s), "wall_s": _rounded(self.wall_s), "fits": self.fits,
                "unmeasured_fits": self.unmeasured_fits, "forward_passes": self.forwards, "cores": self.cores,
                "probe_workers": self.workers, "measured_on": self.measured_on,
                "note": "estimate from CPU costs measured on the machine in measured_on; wall = CPU seconds / "
                        "cores (extraction) + CPU seconds / probe workers (fits), an upper bound on an idle "
                        "machine since the run overlaps them" + ("; no GPU cost has been measured yet, so no "
                                                                 "time is given for CUDA" if self.on_gpu else "")}

    def lines(self) -> list[str]:
        """What `plan` and `run` print: the estimate, said to be one, and what it was measured on."""
        where = self.measured_on
        source = (f"measured on {where.get('cpu', '?')} ({where.get('cores', '?')} cores), "
                  f"{where.get('date', '?')}, torch {where.get('torch', '?')}")
        missing = f"; {self.unmeasured_fits} fits of unmeasured probes not counted" if self.unmeasured_fits else ""
        if self.on_gpu:
            return [f"time, estimated: no GPU measurement yet, so no estimate for {self.device} "
                    f"({self.fits} probe fits, {self.forwards} forward passes; CPU costs {source})"]
        return [f"time, estimated (CPU costs {source}): extraction ~{_duration(self.extraction_wall_s)} "
                f"({self.extraction_cpu_s:,.0f} CPU-s over {self.cores} cores, {self.forwards} forward passes), "
                f"fitting ~{_duration(self.fit_wall_s)} ({self.fits} fits, {self.fit_cpu_s:,.0f} CPU-s over "
                f"{self.workers} probe workers){missing}; at most ~{_duration(self.wall_s)} on an idle machine"]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
