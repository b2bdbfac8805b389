"""Read a pickle of numpy arrays while admitting only numpy's array-rebuilding globals.

`pickle.load` calls whatever callable a pickle names, so a downloaded checkpoint is never given to
it. Here `find_class` admits exactly `numpy.ndarray`, `numpy.dtype` and `_reconstruct` (under its
numpy 1 path `numpy.core.multiarray` and its numpy 2 path `numpy._core.multiarray`); any other
global is refused when the pickle names it, before anything it names can run. Every array loaded
must then be numeric (an object array could carry Python objects) and every container a dict or list.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

# numpy's own reconstructor, found the way numpy pickles an array, so no private module is imported
_RECONSTRUCT = np.zeros(0).__reduce__()[0]

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
}

NUMERIC_KINDS = "biuf"


class UnsafePickleError(ValueError):
    """A pickle that names a global outside ALLOWED_GLOBALS, or holds something other than numeric arrays."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            admitted = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise UnsafePickleError(f"refused to read {self.source}: it names the global {module}.{name}, and only "
                                    f"numpy's array globals ({admitted}) are admitted; it is not a plain array "
                                    "checkpoint, so nothing in it was run")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused to read {self.source}: it refers to a persistent object, which a plain "
                                "array checkpoint never does")


def load_numpy_pickle(data: bytes, source: str) -> Any:
    """The arrays in `data` (nested dicts/lists of numeric ndarrays); `source` names it in messages.
    Raises UnsafePickleError for any other global or content, pickle.UnpicklingError for a damaged pickle."""
    loaded = _NumpyOnlyUnpickler(io.BytesIO(data), source).load()
    _check_numeric(loaded, source, "")
    return loaded


def _check_numeric(value: Any, source: str, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsafePickleError(f"refused to read {source}: key {key!r} at {where or '/'} is not a string")
            _check_numeric(item, source, f"{where}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_numeric(item, source, f"{where}/{index}")
    elif not (isinstance(value, np.ndarray) and value.dtype.kind in NUMERIC_KINDS):
        found = f"an array of dtype {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
        raise UnsafePickleError(f"refused to read {source}: {where or 'its content'} is {found}, "
                                "not a numeric array")
