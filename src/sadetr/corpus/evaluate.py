"""Corpus evaluation of a searcher on an annotation split: VCMR / SVMR / VR rankings, alpha tuning.

The corpus is every video of the index; each query of the split (`qid`, `vid`, `relevant_windows`, token
features `<text_root>/<text_source>/qid{qid}.npz`, a path proven inside that folder by `safe_child`) is
searched once. The localised candidates are kept,
so choosing alpha on validation data re-ranks them without running the model again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sadetr.core.errors import DataError
from sadetr.core.paths import check_relative, safe_child
from sadetr.corpus.metrics import corpus_metrics
from sadetr.corpus.search import Candidates, CorpusSearcher, SearchHit
from sadetr.data.annotations import read_annotations
from sadetr.data.features import TEXT_KEY, load_feature_file

ALPHAS = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
TOP = 100  # moments kept per query (the largest k of the metrics)


@dataclass
class QueryRun:
    """One query's token features and its localised candidates (corpus and own video); the number of
    SA-DETR window forwards of the corpus search is `len(corpus.videos)` (one per context)."""

    gt: dict
    text: np.ndarray  # [L_t, D_t] (model input)
    corpus: Candidates
    own: Candidates | None


def read_split(path: Path) -> list[dict]:
    """The queries of an annotation file (validated by `read_annotations`) as the dicts the corpus
    metrics take: `qid`, `query`, `vid`, `relevant_windows` ([[start, end], ...] seconds), and where
    each was read (`file`, `line`), for errors about it."""
    return [
        {
            "qid": a.qid,
            "query": a.query,
            "vid": a.vid,
            "relevant_windows": [list(w) for w in a.windows],
            "file": str(path),
            "line": a.line,
        }
        for a in read_annotations(path)
    ]


def query_path(searcher: CorpusSearcher, text_root: Path, g: dict) -> Path:
    """`<text_root>/<text_source>/qid{qid}.npz` of the query `g`; a qid (or a symlink) leading out of
    that folder is a `DataError` naming the annotation file and line."""
    source = check_relative(searcher.model.pipeline["text_source"], field="text_source", root=text_root)
    folder = Path(text_root) / source
    return safe_child(folder, f"qid{g['qid']}.npz", field="qid", path=g.get("file"), line=g.get("line"))


def query_features(searcher: CorpusSearcher, text_root: Path, qid: object) -> np.ndarray:
    """Token features of query `qid` from a feature root ([L_t, D_t], as stored)."""
    path = query_path(searcher, text_root, {"qid": qid})
    return load_feature_file(path, TEXT_KEY, int(searcher.model.pipeline["text_dim"]))


def run_queries(
    searcher: CorpusSearcher,
    gt: Sequence[dict],
    text_root: Path,
    k_windows: int,
    svmr: bool = True,
    exhaustive: bool = False,
) -> list[QueryRun]:
    """Localise every query in its top-`k_windows` windows (all windows if `exhaustive`) and in its video."""
    missing = sorted({g["vid"] for g in gt} - set(searcher.videos))
    if missing:
        raise DataError(
            f"{len(missing)} ground-truth videos are not in the index (e.g. {missing[0]}); "
            "the corpus must hold every video of the split",
            field="vid",
        )
    paths = [query_path(searcher, text_root, g) for g in gt]  # every name checked before any work
    dim = int(searcher.model.pipeline["text_dim"])
    runs = []
    for g, path in zip(gt, paths):
        text, qvec = searcher.query_embedding(query_feats=load_feature_file(path, TEXT_KEY, dim))
        rows = np.arange(searcher.num_windows) if exhaustive else searcher.retrieve(qvec, k_windows)[1]
        own = None
        if svmr:
            own = searcher.candidates(searcher.rows_of(g["vid"]), qvec, text)
        runs.append(QueryRun(g, text, searcher.candidates(rows, qvec, text), own))
    return runs


def rankings(
    searcher: CorpusSearcher, runs: Sequence[QueryRun], alpha: float
) -> tuple[list[list[SearchHit]], list[list[SearchHit]] | None]:
    """(VCMR rankings, SVMR rankings or None), TOP moments each, at fusion weight `alpha`."""
    vcmr = [searcher.rank(r.corpus, alpha)[:TOP] for r in runs]
    svmr = None
    if all(r.own is not None for r in runs):
        svmr = [searcher.rank(r.own, alpha)[:TOP] for r in runs]  # type: ignore[arg-type]
    return vcmr, svmr


def score(searcher: CorpusSearcher, runs: Sequence[QueryRun], alpha: float) -> dict[str, float]:
    """The TVR metrics (percent) of the runs at `alpha`."""
    return score_rankings(runs, *rankings(searcher, runs, alpha))


def score_rankings(
    runs: Sequence[QueryRun],
    vcmr: Sequence[Sequence[SearchHit]],
    svmr: Sequence[Sequence[SearchHit]] | None,
) -> dict[str, float]:
    """The TVR metrics (percent) of rankings already made by `rankings`."""
    as_tuples = lambda hs: [[(h.video, h.start, h.end) for h in r] for r in hs]  # noqa: E731
    return corpus_metrics(as_tuples(vcmr), [r.gt for r in runs], as_tuples(svmr) if svmr else None)


def tune_alpha(
    searcher: CorpusSearcher, runs: Sequence[QueryRun], alphas: Sequence[float] = ALPHAS
) -> tuple[float, dict[float, float]]:
    """alpha maximising the mean of VCMR R@{1,5,10} at IoU 0.5 (ties: the smaller alpha)."""
    keys = [f"VCMR-R@{k}-IoU=0.5" for k in (1, 5, 10)]
    table = {}
    for a in alphas:
        m = score(searcher, runs, a)
        table[float(a)] = float(np.mean([m[k] for k in keys]))
    best = max(table, key=lambda a: (table[a], -a))
    return best, table


def tvr_submission(
    gt: Sequence[dict],
    vcmr: Sequence[Sequence[SearchHit]],
    videos: Sequence[str],
    svmr: Sequence[Sequence[SearchHit]] | None = None,
) -> dict:
    """TVR's prediction format: `video2idx` and per task a list of {desc_id, desc, predictions}, each
    prediction `[video_idx, start, end, score]` (VR: `[video_idx, 0, 0, score]`, the video's best moment)."""
    video2idx = {v: i for i, v in enumerate(videos)}

    def task(rows: Sequence[Sequence[SearchHit]], vr: bool = False) -> list[dict]:
        out = []
        for g, hits in zip(gt, rows):
            if vr:
                best: dict[str, float] = {}
                for h in hits:
                    best.setdefault(h.video, h.score)
                preds = [[video2idx[v], 0, 0, s] for v, s in best.items()]
            else:
                preds = [[video2idx[h.video], h.start, h.end, h.score] for h in hits]
            out.append({"desc_id": g.get("qid"), "desc": g.get("query", ""), "predictions": preds})
        return out

    sub = {"video2idx": video2idx, "VCMR": task(vcmr), "VR": task(vcmr, vr=True)}
    if svmr is not None:
        sub["SVMR"] = task(svmr)
    return sub
