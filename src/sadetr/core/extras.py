"""Optional dependencies: which `sadetr[extra]` provides each, checked before a command does any work.

Every command that needs an optional package calls `require` first, so that a missing faiss, pyarrow,
av, transformers, FastAPI or Gradio is one line naming the extra to install, not a traceback at the
end of a long computation.
"""

from __future__ import annotations

import importlib.util

from sadetr.core.errors import ConfigError

# import name -> the extra of pyproject.toml that installs it
EXTRA_OF = {
    "faiss": "search",
    "pyarrow": "search",
    "av": "video",
    "transformers": "video",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "gradio": "app",
    "onnxruntime": "onnx",
    "onnx": "onnx",
}


def missing(*modules: str) -> list[str]:
    """The modules of `modules` that cannot be imported (not installed)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(*modules: str, what: str) -> None:
    """`ConfigError` "<what> needs faiss: pip install 'sadetr[search]'" when a module is not installed.

    >>> require("sadetr", what="this")
    """
    absent = missing(*modules)
    if absent:
        extras = ",".join(dict.fromkeys(EXTRA_OF.get(m, m) for m in absent))
        raise ConfigError(f"{what} needs {', '.join(absent)}: pip install 'sadetr[{extras}]'")
