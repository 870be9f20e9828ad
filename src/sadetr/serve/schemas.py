"""Typed request and response bodies of the HTTP service (they make its OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
    """A sentence to find in every video of the server's index."""

    query: str = Field(min_length=1, description="the sentence; at most the server's max_query_chars")
    top: int = Field(10, ge=1, le=1000, description="hits to return")
    k_windows: int = Field(100, ge=1, le=100_000, description="index windows re-ranked by the model")


class SearchHit(BaseModel):
    video: str = Field(description="video id of the index")
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    score: float = Field(description="final ranking score")
    retrieval_score: float = Field(description="first-stage (index) similarity")
    quality: float = Field(description="the model's moment quality")


class SearchResponse(BaseModel):
    query: str
    hits: list[SearchHit] = Field(description="ranked, best first")


class IndexInfo(BaseModel):
    videos: int
    windows: int


class Health(BaseModel):
    status: str = "ok"
    version: str
    checkpoint: str = Field(description="file name of the loaded checkpoint")
    video_sources: list[str]
    feature_dim: int = Field(description="width of uploaded features: the sources concatenated")
    text_dim: int
    clip_len: float
    accepts_video: bool = Field(description="videos can be uploaded (the backbones are loaded)")
    accepts_text: bool = Field(description="queries can be sent as text (CLIP text is loaded)")
    index: IndexInfo | None
    limits: dict[str, int | float]
    backend: str = Field("torch", description="what runs the model: torch | onnx | onnx-int8")
    batching: dict[str, int | float] | None = Field(
        None, description="the dynamic batcher's settings and counts (runs, requests, rows per run, wait)"
    )


class Error(BaseModel):
    detail: str = Field(description="one line saying what is wrong")
