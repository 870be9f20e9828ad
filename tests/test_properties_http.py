"""Property-based tests (Hypothesis) of the HTTP API (`sadetr serve`): any request, well-formed or not, is
answered 200, 413 or 422 with a one-line reason, never a 5xx; and a 200 answer is consistent with its
request (windows inside the video, best first, one per window, scores in their documented ranges).

The server is in-process (FastAPI's TestClient) on the tiny model of tests/test_serve.py, with CLIP and
a small corpus index, so every path (features, text, query features, search) is reachable.
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="needs the sadetr[serve] extra")

from fastapi.testclient import TestClient

from sadetr.serve.app import create_app
from sadetr.serve.limits import Limits
from sadetr.serve.service import MomentService
from test_serve import VIDEO_DIM, build_tiny_index, npy_bytes, tiny_model_files

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TEXT_DIM = 64
CLIP_LEN = 2.0


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    pytest.importorskip("faiss", reason="the search endpoint needs faiss (sadetr[search])")
    root = tmp_path_factory.mktemp("http_props")
    files = tiny_model_files(root)
    index = build_tiny_index(files, root)
    svc = MomentService.load(
        files["checkpoint"],
        clip=files["clip"],
        index=index,
        limits=Limits(max_upload_mb=0.05, max_video_s=120),
    )
    with TestClient(create_app(svc), raise_server_exceptions=False) as c:
        yield c
    svc.close()


def one_line(resp) -> str:
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail
    return detail


# ---------------------------------------------------------------- /v1/moments

finite = st.floats(-10, 10, allow_nan=False, width=32)
any_float = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def arrays(draw, dims: list[int], max_rows: int = 40) -> np.ndarray:
    rows = draw(st.integers(0, max_rows))
    dim = draw(st.sampled_from(dims))
    values = draw(st.lists(st.one_of(finite, any_float), min_size=1, max_size=4))
    arr = np.resize(np.asarray(values, np.float32), rows * dim).reshape(rows, dim)
    with np.errstate(all="ignore"):  # NaN / large values cast to float16 or int32 on purpose
        return arr.astype(draw(st.sampled_from([np.float32, np.float16, np.float64, np.int32])))


def announcing(rows: int, dim: int) -> bytes:
    """A .npy header announcing [rows, dim] float32, followed by one row."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    return buf.getvalue() + np.ones(dim, np.float32).tobytes()


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(name, data)
    return buf.getvalue()


def uploads(dims: list[int], key: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        arrays(dims).map(npy_bytes),
        arrays(dims).map(lambda a: zipped(f"{key}.npy", npy_bytes(a))),
        st.builds(announcing, st.integers(0, 2**62), st.sampled_from(dims)),
        st.builds(announcing, st.integers(0, 2**62), st.sampled_from(dims)).map(
            lambda b: zipped(f"{key}.npy", b)
        ),
        st.binary(max_size=300),
        st.just(b"0.1 0.2\n0.3 0.4\n"),
    )


form_numbers = st.one_of(
    st.none(),
    any_float.map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e6", "", "abc", "60", "59.5", "1e400"]),
)


@st.composite
def good_moments(draw) -> tuple:
    """A valid request: finite features of the right width, a sentence, a duration near rows x clip."""
    rows = draw(st.integers(1, 40))
    values = draw(st.lists(finite, min_size=rows * VIDEO_DIM, max_size=rows * VIDEO_DIM))
    feats = np.asarray(values, np.float32).reshape(rows, VIDEO_DIM)
    text = None
    if draw(st.booleans()):
        n = draw(st.integers(1, 5))
        tokens = draw(st.lists(finite, min_size=n * TEXT_DIM, max_size=n * TEXT_DIM))
        text = npy_bytes(np.asarray(tokens, np.float32).reshape(n, TEXT_DIM))
    seconds = rows * CLIP_LEN
    duration = draw(st.one_of(st.none(), st.floats(seconds - CLIP_LEN + 0.01, seconds).map(repr)))
    query = draw(st.sampled_from(["the dog", "a cat runs", "dog"]))
    max_moments = draw(st.one_of(st.none(), st.integers(0, 20).map(str)))
    return query, npy_bytes(feats), text, duration, max_moments


hostile_moments = st.tuples(
    st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["the dog", "\u200b", "a\nb", "x" * 600])),
    uploads([VIDEO_DIM, 7], "features"),
    st.one_of(st.none(), uploads([TEXT_DIM, 63], "last_hidden_state")),
    form_numbers,
    form_numbers,
)


@SETTINGS
@given(request=st.one_of(good_moments(), hostile_moments))
def test_any_moments_request_is_answered_consistently_or_refused_in_one_line(client, request):
    query, features, text, duration, max_moments = request
    data = {
        k: v
        for k, v in {"query": query, "duration": duration, "max_moments": max_moments}.items()
        if v is not None
    }
    files = {"features": ("f.npy", features)}
    if text is not None:
        files["text_features"] = ("t.npy", text)
    resp = client.post("/v1/moments", data=data, files=files)
    event(f"HTTP {resp.status_code}")
    assert resp.status_code in (200, 413, 422), resp.text
    if resp.status_code != 200:
        one_line(resp)
        return
    body = resp.json()
    rows = len(body["pred_saliency_scores"])
    assert (
        rows >= 1 and math.isfinite(body["duration"]) and abs(body["duration"] - rows * CLIP_LEN) <= CLIP_LEN
    )
    windows = body["pred_relevant_windows"]
    assert all(0 <= s < e <= body["duration"] + 1e-6 and math.isfinite(c) for s, e, c in windows)
    assert [c for _, _, c in windows] == sorted((c for _, _, c in windows), reverse=True)
    if max_moments not in (None, "0") and max_moments.lstrip("-").isdigit():
        assert len(windows) <= int(max_moments)


# ---------------------------------------------------------------- /v1/search

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.sampled_from([10**30, 0, 1, 3, 1000, 1001]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
token_rows = st.lists(
    st.lists(st.one_of(finite, st.integers(-3, 3)), min_size=TEXT_DIM, max_size=TEXT_DIM), max_size=4
)
search_bodies = st.fixed_dictionaries(
    {},
    optional={
        "query": st.one_of(json_scalars, st.sampled_from(["the dog", "\u200b\u200b", "a cat runs"])),
        "query_features": st.one_of(
            json_scalars, token_rows, st.lists(st.lists(json_scalars, max_size=3), max_size=3)
        ),
        "top": json_scalars,
        "k_windows": json_scalars,
        "extra": json_scalars,
    },
)


def _with_query(d: dict) -> st.SearchStrategy[dict]:
    sentences = st.sampled_from(["the dog", "a cat runs", " The  DOG\u200b"]).map(lambda q: {**d, "query": q})
    tokens = st.integers(1, 4).flatmap(
        lambda n: st.lists(finite, min_size=n * TEXT_DIM, max_size=n * TEXT_DIM).map(
            lambda v: {**d, "query_features": np.reshape(v, (n, TEXT_DIM)).tolist()}
        )
    )
    return st.one_of(sentences, tokens)


good_search = st.fixed_dictionaries({"top": st.integers(1, 20), "k_windows": st.integers(1, 50)}).flatmap(
    _with_query
)


@SETTINGS
@given(body=st.one_of(good_search, search_bodies, st.lists(json_scalars, max_size=3), json_scalars))
def test_any_search_request_is_answered_consistently_or_refused_in_one_line(client, body):
    resp = client.post("/v1/search", json=body)
    event(f"HTTP {resp.status_code}")
    assert resp.status_code in (200, 422), resp.text
    if resp.status_code != 200:
        one_line(resp)
        return
    answer = resp.json()
    hits = answer["hits"]
    top = body.get("top", 10) if isinstance(body, dict) else 10
    assert 1 <= len(hits) <= int(top)
    logs = [h["log_score"] for h in hits]
    assert logs == sorted(logs, reverse=True)
    assert len({(h["video"], h["start"], h["end"]) for h in hits}) == len(hits)  # one answer per window
    for h in hits:
        assert (
            h["log_score"] <= 1e-9
            and -1 - 1e-6 <= h["retrieval_score"] <= 1 + 1e-6
            and 0 <= h["quality"] <= 1
        )
        assert h["log_score"] == pytest.approx(
            answer["alpha"] * (h["retrieval_score"] - 1) + math.log(h["quality"])
        )
