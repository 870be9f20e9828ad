"""Synthetic moment-retrieval datasets in the real on-disk layout (annotations + SF/CLIP/text features).

Generative model (docs/data.md gives it in full): a world of concepts `z = norm(noun + verb + 0.5 u)`
(24 nouns x 6 verbs, latent size 64). A video is a background latent plus events, each one concept
with a soft, jittered (vs. the annotation) temporal profile, plus clip noise; every video source is a
fixed random projection of the clip latents (+ noise; SlowFast through a ReLU). A query names one
event's concept in words; each token is a projection of its word's latent, mixed with the sentence
concept (CLIP-like context), plus noise. Several queries per video point to different events, and
distractor events (often the same noun with another verb) appear elsewhere, so the video alone
cannot tell which moment is meant. Fully determined by the seed.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sadetr.core.atomic import atomic_path, atomic_write_text

LATENT = 64
SF_DIM, CLIP_DIM, TEXT_DIM = 2304, 512, 512
NOUNS = (
    "cup",
    "door",
    "laptop",
    "dog",
    "bike",
    "guitar",
    "car",
    "book",
    "phone",
    "ball",
    "knife",
    "window",
    "camera",
    "plate",
    "chair",
    "tree",
    "boat",
    "mirror",
    "bag",
    "candle",
    "bottle",
    "drum",
    "kite",
    "map",
)
VERBS = ("opens", "holds", "cleans", "throws", "carries", "paints")
SUBJECTS = (
    "a man",
    "a woman",
    "the person",
    "someone",
    "a vlogger",
    "a young girl",
    "the chef",
    "an old man",
)
TAILS = (
    "",
    " in the kitchen",
    " outside",
    " slowly",
    " while talking",
    " near the window",
    " on the street",
    " at night",
    " with a friend",
    " again",
)
# Difficulty knobs (docs/data.md): latent scales, boundary jitter/softness in clips, event strength range.
BACKGROUND = 0.6  # norm of the per-video background latent
CLIP_NOISE = 0.5  # expected norm of the per-clip latent noise
JITTER = 1.0  # true event boundaries = annotated ones + U(-JITTER, JITTER) clips
SOFTNESS = 1.25  # width, in clips, of the linear ramp at each event boundary
STRENGTH = (0.5, 1.2)  # range of an event's amplitude
FILLER = sorted({w for s in SUBJECTS + TAILS for w in s.split()} | {"the", "<bos>", "<eos>"})


@dataclass(frozen=True)
class Preset:
    """Shape of one dataset: durations, clip length, queries/windows per video, window lengths."""

    name: str
    clip_len: float
    queries_per_video: tuple[int, int]  # inclusive range of distinct queried events
    windows_per_query: tuple[float, ...]  # probabilities of 1, 2, 3 ... windows
    win_median: float  # seconds, log-normal median of a window's length
    win_sigma: float  # log-normal sigma
    win_max_frac: float  # longest window, fraction of the duration
    distractors: tuple[int, int]  # inclusive range of distractor events per video
    paraphrase_prob: float  # chance of a second query describing the same event
    clip_aligned: bool  # windows on clip boundaries (QVHighlights)
    saliency: bool  # relevant_clip_ids + saliency_scores (QVHighlights)
    string_qids: bool  # "<vid>_<k>" qids (TACoS)
    max_v_l: int  # for dataset.yaml; 0 = no limit
    # difficulty knobs (module defaults; a harder preset overrides them)
    clip_noise: float = CLIP_NOISE
    strength: tuple[float, float] = STRENGTH

    def duration(self, rng: np.random.Generator) -> float:
        if self.name.startswith("qvhighlights"):  # 150 s, sometimes a shorter tail clip (120..148 s)
            return 150.0 if rng.random() < 0.85 else float(2 * rng.integers(60, 75))
        if self.name == "charades":
            return round(float(np.clip(rng.normal(30.0, 7.0), 12.0, 60.0)), 2)
        return float(np.clip(np.exp(rng.normal(math.log(250.0), 0.45)), 80.0, 700.0))  # tacos


PRESETS = {
    "qvhighlights": Preset(
        "qvhighlights", 2.0, (2, 3), (0.6, 0.25, 0.15), 20.0, 0.8, 0.5, (1, 2), 0.0, True, True, False, 75
    ),
    "charades": Preset("charades", 1.0, (2, 3), (1.0,), 7.3, 0.38, 0.6, (0, 1), 0.3, False, False, False, 75),
    "tacos": Preset("tacos", 2.0, (6, 10), (1.0,), 12.0, 0.8, 0.25, (1, 2), 0.0, False, False, True, 0),
    # For convergence comparisons (docs/data.md, docs/research/README.md): QVHighlights' shapes with 2-4
    # distractors (half share a queried noun), weaker events and noisier clips, so that a DETR needs many
    # epochs to leave the dataset-mean solution.
    "qvhighlights_hard": Preset(
        "qvhighlights_hard",
        2.0,
        (2, 3),
        (0.6, 0.25, 0.15),
        20.0,
        0.8,
        0.5,
        (2, 4),
        0.0,
        True,
        True,
        False,
        75,
        clip_noise=0.8,
        strength=(0.35, 0.9),
    ),
}


class World:
    """Fixed latents of words/concepts and the random projections into feature spaces (from the seed)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 0])
        unit = lambda n: _unit(rng.normal(size=(n, LATENT)))  # noqa: E731
        self.noun, self.verb, self.filler = unit(len(NOUNS)), unit(len(VERBS)), unit(len(FILLER))
        inter = unit(len(NOUNS) * len(VERBS)).reshape(len(NOUNS), len(VERBS), LATENT)
        self.concept = _unit(self.noun[:, None] + self.verb[None, :] + 0.5 * inter)  # [N, V, LATENT]
        scale = 1.0 / math.sqrt(LATENT)
        self.proj_sf = rng.normal(scale=scale, size=(LATENT, SF_DIM)).astype(np.float32)
        self.proj_clip = rng.normal(scale=scale, size=(LATENT, CLIP_DIM)).astype(np.float32)
        self.proj_text = rng.normal(scale=scale, size=(LATENT, TEXT_DIM))
        self.word_index = {w: i for i, w in enumerate(FILLER)}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write an `.npz` atomically: uncompressed, fixed zip timestamps (equal data gives equal bytes)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


@dataclass
class _Event:
    noun: int
    verb: int
    start: float  # annotated window, seconds
    end: float
    query: int  # index of the query it belongs to, -1 for a distractor


def _place(
    rng: np.random.Generator, taken: list[tuple[float, float]], length: float, duration: float, gap: float
) -> tuple[float, float] | None:
    """A random [start, end) of `length` not within `gap` of any taken interval; None if none found."""
    for _ in range(60):
        start = rng.uniform(0.0, duration - length)
        if all(start + length + gap <= s or start >= e + gap for s, e in taken):
            return start, start + length
    return None


class _VideoMaker:
    def __init__(self, world: World, preset: Preset) -> None:
        self.w, self.p = world, preset

    def window_length(self, rng: np.random.Generator, duration: float) -> float:
        length = float(np.exp(rng.normal(math.log(self.p.win_median), self.p.win_sigma)))
        return float(np.clip(length, self.p.clip_len, self.p.win_max_frac * duration))

    def events(self, rng: np.random.Generator, duration: float) -> list[_Event]:
        p, cl = self.p, self.p.clip_len
        n_query = int(rng.integers(p.queries_per_video[0], p.queries_per_video[1] + 1))
        n_distr = int(rng.integers(p.distractors[0], p.distractors[1] + 1))
        # distinct concepts: queried ones first, then distractors (half of them share a queried noun)
        nouns, verbs = rng.integers(0, len(NOUNS), 64), rng.integers(0, len(VERBS), 64)
        pairs = [(int(n), int(v)) for n, v in zip(nouns, verbs)]
        chosen: list[tuple[int, int]] = []
        for pair in pairs:
            if len(chosen) == n_query:
                break
            if pair not in chosen:
                chosen.append(pair)
        for _ in range(n_distr):
            same_noun = rng.random() < 0.5
            noun = chosen[int(rng.integers(len(chosen)))][0] if same_noun else int(rng.integers(len(NOUNS)))
            free = [(noun, v) for v in range(len(VERBS)) if (noun, v) not in chosen]
            if free:
                chosen.append(free[int(rng.integers(len(free)))])
        events: list[_Event] = []
        taken: list[tuple[float, float]] = []
        for k, (noun, verb) in enumerate(chosen):
            is_query = k < n_query
            n_win = 1 + int(rng.choice(len(p.windows_per_query), p=p.windows_per_query)) if is_query else 1
            for _ in range(n_win):
                length = self.window_length(rng, duration) / (1.0 if n_win == 1 else 1.5)
                if p.clip_aligned:
                    length = max(cl, round(length / cl) * cl)
                spot = _place(rng, taken, length, duration, gap=cl)
                if spot is None:
                    continue
                start, end = spot
                if p.clip_aligned:
                    start = round(start / cl) * cl
                    end = min(start + length, duration)
                else:
                    start, end = round(start, 2), round(min(end, duration), 2)
                taken.append((start, end))
                events.append(_Event(noun, verb, start, end, k if is_query else -1))
        return events

    def clips(
        self, rng: np.random.Generator, duration: float, events: list[_Event]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Clip latents [L, LATENT] and, per event, its profile over clips [L] in [0, 1]."""
        cl = self.p.clip_len
        n = math.ceil(duration / cl - 1e-9)
        t = (np.arange(n) + 0.5) * cl  # clip centres, seconds
        background = BACKGROUND * _unit(rng.normal(size=LATENT))
        noise = self.p.clip_noise * rng.normal(size=(n, LATENT)) / math.sqrt(LATENT)
        latent = background + noise  # [L, LATENT]
        profiles = []
        soft = SOFTNESS * cl
        for ev in events:
            s = ev.start + rng.uniform(-JITTER, JITTER) * cl  # true event vs. annotated window
            e = max(ev.end + rng.uniform(-JITTER, JITTER) * cl, s + 0.5 * cl)
            ramp = np.clip((t - s) / soft + 0.5, 0, 1) * np.clip((e - t) / soft + 0.5, 0, 1)
            peak = rng.uniform(ev.start + 0.2 * (ev.end - ev.start), ev.end - 0.2 * (ev.end - ev.start))
            bump = 0.55 + 0.45 * np.exp(-0.5 * ((t - peak) / (0.35 * (ev.end - ev.start))) ** 2)
            strength = rng.uniform(*self.p.strength)
            prof = ramp * bump  # [L] in [0, 1]
            latent += strength * prof[:, None] * self.w.concept[ev.noun, ev.verb]
            profiles.append(prof * strength / self.p.strength[1])
        return latent, profiles

    def features(self, rngs: list[np.random.Generator], latents: list[np.ndarray]) -> list[tuple]:
        """(SlowFast [L, 2304], CLIP [L, 512]) float16 per video; one matmul for many videos (BLAS is
        slow on many small products)."""
        stacked = np.concatenate(latents).astype(np.float32)  # [sum L, LATENT]
        sf_all = np.maximum(stacked @ self.w.proj_sf, 0.0)  # [sum L, SF_DIM]
        clip_all = stacked @ self.w.proj_clip  # [sum L, CLIP_DIM]
        out, row = [], 0
        for rng, lat in zip(rngs, latents):
            n = len(lat)
            sf = sf_all[row : row + n] + 0.1 * rng.standard_normal((n, SF_DIM), dtype=np.float32)
            clip = clip_all[row : row + n] + 0.1 * rng.standard_normal((n, CLIP_DIM), dtype=np.float32)
            out.append((sf.astype(np.float16), clip.astype(np.float16)))
            row += n
        return out

    def query(self, rng: np.random.Generator, noun: int, verb: int) -> tuple[str, np.ndarray]:
        """Query text and its token features [L_t, TEXT_DIM] (<bos> words <eos>)."""
        subj = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
        tail = TAILS[int(rng.integers(len(TAILS)))]
        text = f"{subj} {VERBS[verb]} the {NOUNS[noun]}{tail}."
        concept = self.w.concept[noun, verb]
        words = ["<bos>", *text.rstrip(".").split(), "<eos>"]
        tokens = []
        for word in words:
            if word == NOUNS[noun]:
                vec = self.w.noun[noun]
            elif word == VERBS[verb]:
                vec = self.w.verb[verb]
            else:
                vec = self.w.filler[self.w.word_index[word]]
            tokens.append(vec)
        tok = np.stack(tokens)  # [L_t, LATENT]
        tok[-1] = concept + 0.5 * tok[1:-1].mean(axis=0)  # <eos> summarises the sentence (CLIP-like)
        tok = tok + 0.3 * concept + 0.3 * rng.normal(size=tok.shape) / math.sqrt(LATENT)  # context + noise
        feat = tok @ self.w.proj_text + 0.05 * rng.normal(size=(len(tok), TEXT_DIM))
        return text, feat.astype(np.float16)


def _saliency(
    rng: np.random.Generator, windows: list[tuple[float, float]], profile: np.ndarray, clip_len: float
) -> tuple[list[int], list[list[int]]]:
    """QVHighlights-style labels: the clips of the windows, 3 annotators' 0-4 scores following the profile."""
    ids = sorted({c for s, e in windows for c in range(round(s / clip_len), round(e / clip_len))})
    ids = [c for c in ids if c < len(profile)]
    scores = np.clip(np.rint(1.0 + 3.0 * profile[ids, None] + rng.normal(0, 0.8, (len(ids), 3))), 0, 4)
    return ids, scores.astype(int).tolist()


def _write_videos(maker: _VideoMaker, feat_root: Path, pending: list) -> None:
    """Project the pending videos' latents to features, write them, and empty the list."""
    if not pending:
        return
    feats = maker.features([rng for _, rng, _ in pending], [lat for _, _, lat in pending])
    for (vid, _, _), (sf, clip) in zip(pending, feats):
        save_npz_atomic(feat_root / "slowfast_features" / f"{vid}.npz", features=sf)
        save_npz_atomic(feat_root / "clip_features" / f"{vid}.npz", features=clip)
    pending.clear()


def _fmt(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(float(x), 4)


def generate_synthetic(
    out_dir: str | Path, preset: str = "qvhighlights", n_train: int = 800, n_val: int = 200, seed: int = 0
) -> dict[str, Path]:
    """Write a complete synthetic dataset under `out_dir`; returns the paths written.

    Layout: annotations/{train,val}.jsonl, features/{slowfast_features,clip_features}/{vid}.npz
    (`features`, float16 [L, D]), features/clip_text_features/qid{qid}.npz (`last_hidden_state`),
    dataset.yaml (a `data:` section of DataConfig fields). The test split points at val.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (one of {', '.join(PRESETS)})")
    p = PRESETS[preset]
    out = Path(out_dir).resolve()
    feat_root = out / "features"
    for sub in ("slowfast_features", "clip_features", "clip_text_features"):
        (feat_root / sub).mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    world = World(seed)
    maker = _VideoMaker(world, p)
    paths: dict[str, Path] = {"root": out, "feat_root": feat_root}
    next_qid = 0
    for split_id, (split, n_queries) in enumerate((("train", n_train), ("val", n_val))):
        records: list[dict[str, Any]] = []
        pending: list[tuple[str, np.random.Generator, np.ndarray]] = []
        v = 0
        while len(records) < n_queries:
            rng = np.random.default_rng([seed, 1, split_id, v])
            vid = f"{preset[:3]}_{split}_{v:05d}"
            v += 1
            duration = p.duration(rng)
            events = maker.events(rng, duration)
            latent, profiles = maker.clips(rng, duration, events)
            by_query: dict[int, list[int]] = {}
            for i, ev in enumerate(events):
                if ev.query >= 0:
                    by_query.setdefault(ev.query, []).append(i)
            if not by_query:
                continue
            pending.append((vid, rng, latent))
            k = 0
            for members in by_query.values():
                ev0 = events[members[0]]
                windows = sorted((events[i].start, events[i].end) for i in members)
                profile = np.max([profiles[i] for i in members], axis=0)
                n_q = 2 if rng.random() < p.paraphrase_prob else 1
                for _ in range(n_q):
                    if len(records) >= n_queries:
                        break
                    qid: int | str = f"{vid}_{k}" if p.string_qids else next_qid
                    next_qid += 0 if p.string_qids else 1
                    k += 1
                    text, tok = maker.query(rng, ev0.noun, ev0.verb)
                    save_npz_atomic(feat_root / "clip_text_features" / f"qid{qid}.npz", last_hidden_state=tok)
                    rec: dict[str, Any] = {"qid": qid, "query": text, "duration": _fmt(duration), "vid": vid}
                    if p.saliency:
                        ids, scores = _saliency(rng, windows, profile, p.clip_len)
                        rec["relevant_clip_ids"], rec["saliency_scores"] = ids, scores
                    rec["relevant_windows"] = [[_fmt(s), _fmt(e)] for s, e in windows]
                    records.append(rec)
            if len(pending) == 64:
                _write_videos(maker, feat_root, pending)
        _write_videos(maker, feat_root, pending)
        path = out / "annotations" / f"{split}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        paths[split] = path
    data_cfg = {
        "dataset": preset,
        "train_path": str(paths["train"]),
        "val_path": str(paths["val"]),
        "test_path": str(paths["val"]),
        "feat_root": str(feat_root),
        "video_sources": ["slowfast_features", "clip_features"],
        "video_dims": [SF_DIM, CLIP_DIM],
        "text_source": "clip_text_features",
        "text_dim": TEXT_DIM,
        "clip_len": p.clip_len,
        "max_v_l": p.max_v_l,
        "max_q_l": 32,
    }
    paths["config"] = out / "dataset.yaml"
    atomic_write_text(paths["config"], yaml.safe_dump({"data": data_cfg}, sort_keys=False))
    return paths
