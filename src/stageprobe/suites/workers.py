"""Probe fits in worker processes.

The study's probes are small jobs that run fastest on one thread each (see
`probes.training.small_model_threads`), so on a CPU the cores are used by fitting several probes
at once, one per process, rather than by splitting each fit across threads.

A `FitRequest` names its inputs — a feature store directory and a stage, a dataset spec —
instead of carrying them: each process loads what it needs and keeps the last stage it read,
so no feature tensor crosses a process boundary. Every probe seeds itself and the runner reads
results in submission order, so a run gives the same numbers with one worker or several.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.forkserver
import os
import select
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stageprobe.datasets import Dataset, Sample, dataset_from_spec
from stageprobe.features.store import FeatureStore
from stageprobe.probes import ProbeData, ProbeResult, fit_probe, split_probe_data
from stageprobe.probes.training import probe_precision
from stageprobe.suites._validation import validation_scores

#: at most this many workers by default: more processes each hold a stage of features in memory
MAX_AUTO_WORKERS = 4


@dataclass(frozen=True)
class FitRequest:
    """One probe fit: probe and task, where its features are, and how it is controlled."""

    probe: str
    task: str
    store: str
    stage: str
    dataset_spec: str
    #: reconstruction probes need the images themselves as targets
    with_images: bool
    seed: int
    control: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    #: also score the fitted probe on the validation split (what picks the best stage)
    score_val: bool = False
    #: the run's resolved probe precision (float32 | bfloat16) the gradient-trained probes compute in; part
    #: of the request, so fits of different precision are never taken for one another
    precision: str = "float32"


@dataclass
class FitOutput:
    """A fit's test result (without its predictor) and, when asked for, its validation scores."""

    result: ProbeResult
    val_scores: dict[str, float] = field(default_factory=dict)
    #: wall seconds of the fit in its worker (loading the stage's features included)
    seconds: float = 0.0
    #: the same fit's CPU seconds in its process (user + sys, all its threads): unlike wall seconds, not
    #: inflated when the machine is shared
    cpu_seconds: float = 0.0


@dataclass
class _Labels:
    """A dataset without its pixels: what `split_probe_data` needs, plus images when asked for."""

    samples: list[Sample]
    image_size: tuple[int, int]
    images: np.ndarray | None = None


@dataclass
class _InputCache:
    """Per process: datasets by spec, and the splits of the last (store, stage) read."""

    labels: dict[str, _Labels] = field(default_factory=dict)
    last_stage: tuple[tuple[str, str, bool], dict[str, ProbeData]] | None = None

    def add_dataset(self, dataset: Dataset) -> str:
        spec = dataset_key(dataset)
        if spec not in self.labels:
            self.labels[spec] = _labels_of(dataset)
        return spec

    def splits(self, request: FitRequest) -> dict[str, ProbeData]:
        key = (request.store, request.stage, request.with_images)
        if self.last_stage is None or self.last_stage[0] != key:
            if request.dataset_spec not in self.labels:
                self.add_dataset(dataset_from_spec(json.loads(request.dataset_spec)))
            labels = self.labels[request.dataset_spec]
            if request.with_images and labels.images is None:
                labels.images = image_array(dataset_from_spec(json.loads(request.dataset_spec)))
            self.last_stage = None  # release the previous stage before the next is loaded
            features = FeatureStore.open(request.store).load(request.stage)
            self.last_stage = (key, split_probe_data(features, labels.samples,
                                                     labels.images if request.with_images else None,
                                                     image_size=labels.image_size))
        return self.last_stage[1]


_CACHE = _InputCache()


def dataset_key(dataset: Dataset) -> str:
    return json.dumps(dataset.spec(), sort_keys=True, default=str)


def image_array(samples: Iterable[Sample]) -> np.ndarray:
    """(N, h, w, 3) float32 images in [0, 1]: the reconstruction targets."""
    images = []
    for sample in samples:
        if sample.image is None:
            raise ValueError(f"sample {sample.key!r} has no image to reconstruct")
        images.append(np.asarray(sample.image.convert("RGB"), dtype=np.float32) / 255.0)
    return np.stack(images)


def _labels_of(dataset: Dataset) -> _Labels:
    samples, size = [], None
    for sample in dataset:
        if size is None:
            first = sample.image if sample.image is not None else (sample.frames or [None])[0]
            if first is None:
                raise ValueError(f"sample {sample.key!r} has neither an image nor frames")
            size = (first.size[1], first.size[0])
        samples.append(Sample(sample.key, sample.split, target=sample.target))
    if size is None:
        raise ValueError("the dataset has no samples")
    return _Labels(samples, size)


def fit_request(request: FitRequest) -> FitOutput:
    """Fit one probe (in whichever process runs this) and return its result without the predictor,
    a closure over the fitted probe that cannot cross processes; the runner uses `predictions`."""
    started, cpu_started = time.perf_counter(), time.process_time()
    splits = _CACHE.splits(request)
    with probe_precision(request.precision):
        result = fit_probe(request.probe, request.task, splits["train"], splits["val"], splits["test"],
                           seed=request.seed, control=request.control, **dict(request.options))
    val_scores = validation_scores(result, splits["val"]) if request.score_val else {}
    result.predictor = None
    return FitOutput(result, val_scores, time.perf_counter() - started,
                     time.process_time() - cpu_started)


def _start_worker(main_pid: int) -> None:
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with, args=(main_pid,), name="exit-with-main-process", daemon=True).start()
    # Ctrl-C reaches the whole process group. A worker only reads, so it may stop at once; the
    # main process reports the interruption once instead of every worker printing a traceback.
    # Where SIGINT is ignored (a background job) the main process ignores it too: so does a worker.
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, lambda _signum, _frame: os._exit(130))


def _exit_with(main_pid: int) -> None:
    """End this worker as soon as the main process is gone, however it died (SIGKILL, out of memory).

    Nothing else would: a worker's parent is the fork server, not the main process, and the worker
    holds both ends of its own task queue, so it never reads an end-of-file there; each would keep its
    stage of features in memory for good. A pidfd turns readable when the process exits; where there
    is none (not Linux ≥ 5.3) the main process is polled once a second."""
    try:
        handle = os.pidfd_open(main_pid)
    except (AttributeError, OSError):
        handle = None
    if handle is not None:
        select.select([handle], [], [])
    else:
        while _running(main_pid):
            time.sleep(1.0)
    os._exit(1)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_context() -> multiprocessing.context.BaseContext:
    """Workers are forked from a fork server that has imported this module (torch, the probes) once and
    never ran an OpenMP op: a child forked from this process would inherit its OpenMP thread pool in a
    broken state, and a spawned one spends seconds importing torch before its first fit. The server
    starts now, so it imports while this process extracts the first features. Spawn where there is no
    fork server (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    multiprocessing.forkserver.ensure_running()
    return context


def auto_workers(device: torch.device) -> int:
    """One process per available core (up to `MAX_AUTO_WORKERS`) on CPU; one on a GPU, which runs
    each fit fast and whose memory several processes would each claim a share of."""
    if device.type != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_WORKERS))


class ProbePool:
    """Runs `FitRequest`s in this process (`workers=1`) or in `workers` spawned processes."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"probe workers must be at least 1, got {workers}")
        self.workers = workers
        #: fits of the current dataset by request: experiments on the same data that read the same stage
        #: (E-Q2.1 and E-Q2.2 both read `vision.pre_merge` and `pixels.patch`) fit each probe there once.
        #: Kept for one dataset at a time, so a run never holds every experiment's results.
        self._fits: dict[FitRequest, Future[FitOutput]] = {}
        #: fits submitted to the workers and not yet known to be done (any dataset)
        self._running: list[Future[FitOutput]] = []
        self._executor = (ProcessPoolExecutor(workers, mp_context=_worker_context(), initializer=_start_worker,
                                              initargs=(os.getpid(),))
                          if workers > 1 else None)

    def add_dataset(self, dataset: Dataset) -> str:
        """The key requests name `dataset` by; for in-process fits its labels are read here, once
        (worker processes read their own)."""
        key = _CACHE.add_dataset(dataset) if self._executor is None else dataset_key(dataset)
        if any(request.dataset_spec != key for request in self._fits):
            self._fits.clear()
        return key

    def started(self, request: FitRequest) -> bool:
        """Whether this request's fit was already submitted (for this dataset)."""
        return request in self._fits

    def submit(self, request: FitRequest) -> Future[FitOutput]:
        """The fit of `request`: started now, or the one already started for the same request."""
        if request not in self._fits:
            self._fits[request] = self._start(request)
        return self._fits[request]

    def busy(self) -> bool:
        """Whether a worker is fitting (or has fits queued)."""
        self._running = [future for future in self._running if not future.done()]
        return bool(self._running)

    def _start(self, request: FitRequest) -> Future[FitOutput]:
        if self._executor is not None:
            self._running.append(self._executor.submit(fit_request, request))
            return self._running[-1]
        return _InProcessFit(request)


    @contextlib.contextmanager
    def cores_left(self) -> Iterator[None]:
        """While workers fit, run this process's torch ops on the cores they leave (at least one): two
        OpenMP threads on a core a worker is fitting on spin against it, and extraction beside two fits
        took 2.6× as long (measured, 2 cores)."""
        previous = torch.get_num_threads()
        if self.busy():
            torch.set_num_threads(max(1, previous - self.workers))
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        """End the workers now, fits and all: on an interruption (Ctrl-C, SIGTERM) or an error, waiting
        for a running fit would keep the user waiting for a result nobody reads."""
        if self._executor is None:
            return
        for process in list(getattr(self._executor, "_processes", {}).values()):
            process.terminate()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProbePool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.stop()


class _InProcessFit(Future[FitOutput]):
    """A fit in this process, run when its result is first asked for: under the progress bar of the
    experiment that collects it, not unseen (minutes without a sign of life, measured) while the next
    experiment is being set up. Every fit seeds itself, so when it runs does not change its numbers."""

    def __init__(self, request: FitRequest) -> None:
        super().__init__()
        self.request = request

    def result(self, timeout: float | None = None) -> FitOutput:
        if not self.done():
            try:
                self.set_result(fit_request(self.request))
            except Exception as error:
                self.set_exception(error)
        return super().result(timeout)
