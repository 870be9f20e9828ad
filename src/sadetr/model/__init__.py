"""The SA-DETR model, its matcher and losses, and the pieces its baselines share; the baselines
(Moment-DETR, QD-DETR) live in the `baselines` subpackage, which only `build` imports.

Never imports the data layer, the engine or the CLI: modules take plain tensors and arguments;
`build_model(cfg)` / `build_criterion(model_cfg, loss_cfg)` (`build.py`, both dispatching on `model.name`)
are the only readers of the config.
"""

from __future__ import annotations

import importlib

# Lazy re-exports: `from sadetr.model import build_model` works without importing torch at package import.
_LAZY = {
    "build_model": "sadetr.model.build",
    "build_criterion": "sadetr.model.build",
    "to_submission": "sadetr.model.postprocess",
    "get_preset": "sadetr.config.presets",
    "list_presets": "sadetr.config.presets",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sadetr.model' has no attribute {name!r}")
