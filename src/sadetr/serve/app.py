"""The FastAPI application: `/v1/moments`, `/v1/search`, `/healthz`, OpenAPI at `/docs`.

Every user error is a 4xx with `{"detail": "<one line>"}`: 413 upload too large, 422 bad or
unreadable input, 404 search without an index, 503 queue full, 504 timeout. An unexpected error is
logged with its traceback on the server and answered 500 `{"detail": "internal error"}`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sadetr import __version__
from sadetr.core import ranges
from sadetr.core.errors import DataError, SadetrError
from sadetr.serve.schemas import (
    DemoQueries,
    Error,
    Health,
    Moments,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from sadetr.serve.service import MomentService, NoIndex, ServiceBusy, ServiceTimeout
from sadetr.serve.tempdirs import ProcessTempDir
from sadetr.serve.uploads import UploadTooLarge, read_array, save_upload, video_suffix

log = logging.getLogger(__name__)

UPLOAD_PREFIX = "sadetr-serve-"  # <tmp>/sadetr-serve-<pid>-*/: this process's uploads
LABEL = "(query features)"  # what the model's record calls a query sent as token features only

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": text}
    for status, text in [
        (413, "upload too large"),
        (422, "bad or unreadable input"),
        (503, "too many requests waiting"),
        (504, "timed out"),
    ]
}


def _status(err: SadetrError) -> int:
    for kind, status in ((UploadTooLarge, 413), (NoIndex, 404), (ServiceBusy, 503), (ServiceTimeout, 504)):
        if isinstance(err, kind):
            return status
    return 422


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "form"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return _one_line("; ".join(parts) or "invalid request")


async def _read_limited(upload: UploadFile, max_bytes: int, field: str) -> bytes:
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadTooLarge(f"upload larger than the limit of {max_bytes / 2**20:.3g} MiB", field=field)
    return data


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413, announced (Content-Length) or streamed.

    A streamed (chunked) body is counted as it arrives; past the limit the rest is not read and the
    app's answer to the truncated body is replaced by the 413.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        return JSONResponse(
            {"detail": f"request body larger than the limit of {self.max_bytes / 2**20:.3g} MiB"},
            status_code=413,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        seen, exceeded = 0, False

        async def counted_receive() -> Any:
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._too_large()(scope, receive, send)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
            await self._too_large()(scope, receive, send)


def _mount_docs(app: FastAPI) -> None:
    """The OpenAPI page at /docs, from the local `swagger-ui-bundle` assets (offline) when installed."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    assets: dict[str, Any] = {}
    if importlib.util.find_spec("swagger_ui_bundle") is not None:
        from fastapi.staticfiles import StaticFiles
        from swagger_ui_bundle import swagger_ui_path

        app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
        assets = {
            "swagger_js_url": "/docs-assets/swagger-ui-bundle.js",
            "swagger_css_url": "/docs-assets/swagger-ui.css",
            "swagger_favicon_url": "/docs-assets/favicon-32x32.png",
        }

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="sadetr API", **assets)


def create_app(service: MomentService) -> FastAPI:
    """The service's HTTP API over `service` (its model is loaded already and shared by all requests).

    Uploads are written under one temp folder of this process (`tempdirs.ProcessTempDir`), made when
    the app starts (removing those of killed servers) and removed when it stops.
    """
    limits = service.limits
    uploads: dict[str, Path] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with ProcessTempDir(UPLOAD_PREFIX) as root:
            uploads["root"] = root
            yield

    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        title="sadetr",
        version=__version__,
        lifespan=lifespan,
        description="SA-DETR video moment retrieval and highlight detection: moments of one video, "
        'or search over an indexed corpus. Errors are `{"detail": "<one line>"}`.',
    )

    @app.exception_handler(SadetrError)
    async def user_error(_: Request, err: SadetrError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(err))}, status_code=_status(err))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path, exc_info=err)
        return JSONResponse({"detail": "internal error (logged on the server)"}, status_code=500)

    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes + (1 << 20))  # + multipart overhead

    _mount_docs(app)

    @app.get("/healthz", response_model=Health, summary="model, index and limits of this server")
    async def healthz() -> Health:
        return Health(version=__version__, **service.info())

    @app.post(
        "/v1/moments",
        response_model=Moments,
        responses=ERRORS,
        summary="ranked moments and per-clip saliency of one video for one query",
    )
    async def moments(
        query: Annotated[
            str, Form(description="the sentence to find (optional with text_features: then a label)")
        ] = "",
        video: Annotated[
            UploadFile | None, File(description="a video file (needs --clip/--slowfast)")
        ] = None,
        features: Annotated[
            UploadFile | None,
            File(
                description=".npy, or .npz with `features`: [L, feature_dim] in the order of "
                "`video_sources` (see /healthz), clip_len seconds per row"
            ),
        ] = None,
        text_features: Annotated[
            UploadFile | None,
            File(
                description="optional .npy/.npz [L_t, text_dim] query token features (instead of CLIP text)"
            ),
        ] = None,
        duration: Annotated[
            float | None,
            Form(
                description="seconds (default: rows x clip_len, or the video's); must agree with the "
                "input within one clip",
                **ranges.DURATION_S.field(),
            ),
        ] = None,
        max_moments: Annotated[
            int, Form(description="keep the best N (0: all)", **ranges.MAX_MOMENTS.field())
        ] = 0,
        qid: Annotated[str | None, Form(description="echoed back")] = None,
        vid: Annotated[str | None, Form(description="echoed back")] = None,
    ) -> Moments:
        query = service.check_query(query, required=text_features is None)
        if (video is None) == (features is None):
            raise DataError("send exactly one of `video` and `features`", field="video")
        feats = text = None
        if text_features is not None:
            text = await asyncio.to_thread(
                read_array,
                await _read_limited(text_features, limits.max_upload_bytes, "text_features"),
                "text_features",
                service.predictor.text_dim,
                key="last_hidden_state",
                max_bytes=limits.max_upload_bytes,
            )
            text = service.check_query_features(text, "text_features")
        workdir = Path(tempfile.mkdtemp(prefix="request-", dir=uploads.get("root")))
        try:
            path = None
            if video is not None:
                path = await save_upload(
                    video, workdir / f"upload{video_suffix(video.filename)}", limits.max_upload_bytes, "video"
                )
                seconds = await asyncio.to_thread(service.check_video, path)  # PyAV probe: off the event loop
                service.check_duration(duration, seconds, "video")
            else:
                assert features is not None
                feats = await asyncio.to_thread(
                    read_array,
                    await _read_limited(features, limits.max_upload_bytes, "features"),
                    "features",
                    service.feature_dim,
                    max_bytes=limits.max_upload_bytes,
                )
                service.check_features(feats)
                clips = feats.shape[0]
                service.check_duration(
                    duration, clips * service.predictor.clip_len, f"features ({clips} clips)"
                )
            rec = await service.submit(
                service.moments,
                query or LABEL,
                video=path,
                features=feats,
                text_features=text,
                duration=duration,
                max_moments=max_moments,
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        rec["query"] = query
        return Moments(qid=qid, vid=vid, **{k: rec[k] for k in Moments.model_fields if k in rec})

    @app.post(
        "/v1/search",
        response_model=SearchResponse,
        responses={404: {"model": Error, "description": "no index on this server"}, **ERRORS},
        summary="moments matching a sentence across all videos of the index (`sadetr index`)",
    )
    async def search(body: SearchRequest) -> SearchResponse:
        if service.searcher is None:
            raise NoIndex("no corpus index on this server (start it with --index INDEX_DIR)")
        feats = None
        if body.query_features is not None:
            feats = service.check_query_features(body.query_features, "query_features")
            query = ""
        else:
            query = service.check_query(body.query)
        hits = await service.submit(
            service.search, query, top=body.top, k_windows=body.k_windows, query_features=feats
        )
        return SearchResponse(
            query=query,
            alpha=float(service.searcher.alpha),
            hits=[SearchHit.model_validate(h, from_attributes=True) for h in hits],
        )

    if service.demo is not None:
        demo = service.demo

        @app.get(
            "/v1/demo/queries",
            response_model=DemoQueries,
            summary="the sentences of the synthetic demo (the only ones it can search for)",
        )
        async def demo_queries() -> DemoQueries:
            return DemoQueries(
                note=demo.describe(),
                queries=[
                    {"query": q.query, "vid": q.vid, "relevant_windows": q.relevant_windows}
                    for q in demo.queries
                ],
            )

    return app
