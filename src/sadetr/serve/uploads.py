"""Client bytes to server objects: uploads copied into a private temp dir, feature arrays validated.

Clients never choose a server path: an upload is written under a fresh directory of the server's own
temp folder (`tempdirs.ProcessTempDir`) with a fixed name (only a known video suffix is kept), and the
caller deletes the directory afterwards. Messages never show a server path.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from sadetr.core.errors import DataError
from sadetr.video.decode import VIDEO_SUFFIXES

CHUNK = 1 << 20


class UploadTooLarge(DataError):
    """An upload over the server's size limit (HTTP 413)."""


class AsyncReadable(Protocol):
    filename: str | None

    async def read(self, size: int = -1) -> bytes: ...


def video_suffix(filename: str | None) -> str:
    """The upload's suffix if it is a known video suffix, else `.mp4` (a name is never used as a path)."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in VIDEO_SUFFIXES else ".mp4"


async def save_upload(upload: AsyncReadable, target: Path, max_bytes: int, field: str) -> Path:
    """Copy an upload to `target` in chunks; `UploadTooLarge` past `max_bytes`, `DataError` if empty."""
    size = 0
    with open(target, "wb") as fh:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLarge(
                    f"upload larger than the limit of {max_bytes / 2**20:.3g} MiB", field=field
                )
            fh.write(chunk)
    if size == 0:
        raise DataError("empty upload", field=field)
    return target


def _npy_header(stream: IO[bytes], size: int, field: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the `.npy` in `stream` (`size` bytes), checked before any array is allocated.

    Refused with a `DataError`: not a `.npy` (text, a pickle), an object dtype, or a header whose
    shape and dtype do not add up to the bytes that follow it (e.g. 2^40 rows announced in 1 kB).
    """
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise DataError(f"unsupported .npy format version {version}", field=field)
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"not a readable .npy/.npz array ({_first_line(err)})", field=field) from err
    if dtype.hasobject:
        raise DataError("holds Python objects (a pickle), which are never loaded: send numbers", field=field)
    announced = math.prod(shape) * dtype.itemsize
    if announced != size - stream.tell():
        raise DataError(
            f"the .npy header announces shape {list(shape)} of {dtype} ({announced} bytes), but "
            f"{size - stream.tell()} bytes follow it",
            field=field,
        )
    return tuple(shape), dtype


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def read_array(data: bytes, field: str, dim: int, key: str = "features", max_bytes: int = 0) -> np.ndarray:
    """A 2-D float array [L > 0, dim] from `.npy` bytes or a `.npz` with `key` (or one array); no pickles.

    A `.npz` whose arrays are over `max_bytes` uncompressed (when > 0) is refused before inflating it,
    and every `.npy` header is checked against its bytes before the array is allocated.
    """
    try:
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                infos = {info.filename: info for info in archive.infolist()}
                inflated = sum(info.file_size for info in infos.values())
                if max_bytes and inflated > max_bytes:
                    raise UploadTooLarge(
                        f"the .npz holds {inflated / 2**20:.1f} MiB uncompressed, over the limit of "
                        f"{max_bytes / 2**20:.3g} MiB",
                        field=field,
                    )
                names = [n[: -len(".npy")] for n in infos if n.endswith(".npy")]
                if key not in names and len(names) != 1:
                    raise DataError(f"the .npz has arrays {names}, expected {key!r}", field=field)
                member = infos[f"{key if key in names else names[0]}.npy"]
                with archive.open(member) as stream:
                    _npy_header(stream, member.file_size, field)
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arr = npz[key if key in names else names[0]]
        else:
            _npy_header(io.BytesIO(data), len(data), field)
            arr = np.load(io.BytesIO(data), allow_pickle=False)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"not a readable .npy/.npz array ({_first_line(err)})", field=field) from err
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise DataError(f"expected a numeric array, got dtype {getattr(arr, 'dtype', '?')}", field=field)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != dim:
        raise DataError(f"expected shape [L > 0, {dim}], got {list(arr.shape)}", field=field)
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError("contains NaN or Inf", field=field)
    return arr
