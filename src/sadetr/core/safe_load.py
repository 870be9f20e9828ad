"""Reading pickled weight files (`.ckpt`, `.pyth`, `.pt`, `pytorch_model.bin`) without running their code.

Every such file is read with `torch.load(weights_only=True)`: tensors, numbers, strings, lists,
tuples and dicts only. A few more plain-value types that real checkpoints carry (numpy scalars and
dtypes, e.g. an epoch counter saved as `np.int64`) are allowed for the duration of the call only
(`torch.serialization.safe_globals`), never process-wide. Anything else (a class, a function such as
`os.system` behind `__reduce__`) is refused with a `CheckpointError` naming the file and the refused
type; the error never suggests loading the file unsafely.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from typing import Any

import numpy as np
import torch

from sadetr.core.errors import CheckpointError


def _numpy_plain_types() -> list[Any]:
    """numpy scalar reconstruction and dtype classes: values, not code."""
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core
    scalar = core.multiarray.scalar
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [scalar, np.dtype, *dtypes]


def refused_global(err: BaseException) -> str | None:
    """The `module.name` that torch's weights-only unpickler refused, if its message names one."""
    match = re.search(r"GLOBAL ([\w.]+)", str(err))
    return match[1] if match else None


def load_weights(
    path: str | os.PathLike[str], what: str, map_location: Any = "cpu", extra_globals: list[Any] | None = None
) -> Any:
    """`torch.load(path, weights_only=True)` (plus numpy scalars and the caller's `extra_globals`, plain-value
    containers only); every failure is a one-line `CheckpointError` naming `path` and, for a refused
    object, its type."""
    allowed = _numpy_plain_types() + list(extra_globals or [])
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = refused_global(err)
        if refused is None:  # garbage, or pickle opcodes the weights-only reader does not take
            match = re.search(r"Unsupported operand \d+|Unsupported class [\w.]+", str(err))
            why = match[0].lower() if match else "not a torch weights file"
            raise CheckpointError(f"{path}: unreadable {what} ({why})") from None
        raise CheckpointError(
            f"{path}: refused to load this {what}: it refers to {refused}, which is neither a tensor nor a "
            "plain value; weight files are only read as weights, since anything else could run code"
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such {what}") from None
    except Exception as err:  # truncated zip, not a torch file, ...: torch raises many types
        first = (str(err).strip().splitlines() or [""])[0][:200]
        if "weights_only" in first:  # torch's advice to load unsafely is never passed on
            first = "not a plain weights file"
        raise CheckpointError(f"{path}: unreadable {what} ({type(err).__name__}: {first})") from None
