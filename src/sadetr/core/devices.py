"""Device names a user may give (`--device`, `train.device`): auto | cpu | cuda | cuda:N | mps.

Checked by name before anything is built, and against the machine when resolved, so that a typo
(`tpu`) or a missing GPU is one line naming the option, not a torch traceback.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sadetr.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = "auto | cpu | cuda | cuda:N | mps"
_DEVICE = re.compile(r"auto|cpu|cuda(?::\d+)?|mps")


def check_device(name: object, key: str) -> str:
    """`name` if it is a device sadetr knows, else a `ConfigError` naming `key`.

    >>> check_device("cuda:1", "--device")
    'cuda:1'
    """
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ConfigError(f"unknown device {name!r} (one of {DEVICE_NAMES})", key=key)
    return name


def resolve_device(name: str, key: str, local_rank: int = 0) -> torch.device:
    """`auto` -> cuda:local_rank when CUDA is available, else cpu; `cuda` -> cuda:local_rank; a device
    this machine does not have is a `ConfigError` naming `key`."""
    import torch

    check_device(name, key)
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available", key=key)
        index = int(name.partition(":")[2] or local_rank)
        if index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ConfigError(f"device {name!r}: this machine has {count} GPU(s)", key=key)
        return torch.device(f"cuda:{index}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available", key=key)
    return torch.device(name)
