"""Typed request and response bodies of the HTTP service (they make its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from sadetr.core import ranges


class Moments(BaseModel):
    """One video and one query in the QVHighlights submission format."""

    qid: int | str | None = Field(None, description="echoed from the request")
    vid: str | None = Field(None, description="echoed from the request")
    query: str
    duration: float = Field(description="video duration, seconds")
    clip_len: float = Field(description="seconds per clip of the saliency curve")
    pred_relevant_windows: list[tuple[float, float, float]] = Field(
        description="[start_s, end_s, score], best first"
    )
    pred_saliency_scores: list[float] = Field(description="one saliency score per clip")
    num_windows: int = Field(description="sliding windows the video was cut into (1 if it fits)")


class SearchRequest(BaseModel):
    """A sentence, or its token features, to find in every video of the server's index."""

    query: str | None = Field(
        None, description="the sentence (needs a server with CLIP, or one of the synthetic demo's sentences)"
    )
    query_features: list[list[float]] | None = Field(
        None,
        description="instead of `query`: its token features [L_t, text_dim] (see /healthz), as "
        "`sadetr search --query-features`",
    )
    top: Annotated[int, Field(**ranges.TOP.field())] = Field(10, description="hits to return")
    k_windows: Annotated[int, Field(**ranges.K_WINDOWS.field())] = Field(
        100, description="index windows re-ranked by the model (at most the index size)"
    )

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.query is None) == (self.query_features is None):
            raise ValueError("send exactly one of `query` and `query_features`")
        return self


class SearchHit(BaseModel):
    """One moment of the corpus (docs/corpus.md "Score fusion" says what the scores mean)."""

    video: str = Field(description="video id of the index")
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    log_score: float = Field(
        description="the ranking score, readable: alpha (s - 1) + ln q <= 0; 0 is a perfect match, each "
        "unit lower is a factor e less likely to be ranked above"
    )
    score: float = Field(description="exp(log_score) = exp(alpha (s - 1)) q in (0, 1] (tiny for large alpha)")
    retrieval_score: float = Field(description="s: cosine of the query and the best index window, in [-1, 1]")
    quality: float = Field(
        description="q: the model's estimate of the moment's IoU with the truth, in [0, 1]"
    )


class SearchResponse(BaseModel):
    query: str = Field(description="the normalised query ('' when query_features were sent)")
    alpha: float = Field(description="the fusion weight of the index (log_score = alpha (s - 1) + ln q)")
    hits: list[SearchHit] = Field(description="ranked, best first")


class DemoQueries(BaseModel):
    """The sentences of the synthetic demo, each with the video and seconds where it truly happens."""

    note: str
    queries: list[dict[str, Any]]


class IndexInfo(BaseModel):
    videos: int
    windows: int


class DemoInfo(BaseModel):
    synthetic: bool = True
    queries: int = Field(description="sentences the demo knows (GET /v1/demo/queries)")
    note: str


class Health(BaseModel):
    status: str = "ok"
    version: str
    checkpoint: str = Field(description="file name of the loaded checkpoint")
    video_sources: list[str]
    feature_dim: int = Field(description="width of uploaded features: the sources concatenated")
    text_dim: int
    clip_len: float
    accepts_video: bool = Field(description="videos can be uploaded (the backbones are loaded)")
    accepts_text: bool = Field(
        description="any sentence can be sent as text (CLIP text is loaded); else send query token features "
        "(or, on the demo, one of its sentences)"
    )
    index: IndexInfo | None
    demo: DemoInfo | None = Field(description="the synthetic demo this server runs on (--demo)")
    limits: dict[str, int | float]
    backend: str = Field("torch", description="what runs the model: torch | onnx | onnx-int8")
    batching: dict[str, int | float] | None = Field(
        None, description="the dynamic batcher's settings and counts (runs, requests, rows per run, wait)"
    )


class Error(BaseModel):
    detail: str = Field(description="one line saying what is wrong")
