"""The corpus step of `sadetr demo`: index the synthetic validation videos, search, score (offline)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sadetr.core.jsonio import write_json
from sadetr.corpus import CorpusSearcher, build_index
from sadetr.corpus.evaluate import query_features, read_split, run_queries, score, tune_alpha
from sadetr.corpus.index import set_alpha


def corpus_demo(checkpoint: Path, data_root: Path, out_dir: Path, n_show: int = 3) -> dict[str, Any]:
    """Build `out_dir/index` over the val videos of `data_root`, tune alpha on val, print the top hits
    of `n_show` queries and the TVR corpus metrics; returns the metrics (also in `out_dir/metrics.json`).

    The index is the demo's own: one left by an earlier demo (built with the checkpoint this demo has just
    retrained) is replaced, so that `make demo` can run again (an index refuses another checkpoint)."""

    gt = read_split(data_root / "annotations" / "val.jsonl")
    videos = sorted({g["vid"] for g in gt})
    feat_root = data_root / "features"
    if (out_dir / "index").is_dir():
        shutil.rmtree(out_dir / "index")
    index = build_index(checkpoint, feat_root, out_dir / "index", videos=videos)
    searcher = CorpusSearcher.open(index)
    k = min(10, searcher.num_windows)
    runs = run_queries(searcher, gt, feat_root, k)
    alpha, _ = tune_alpha(searcher, runs)
    set_alpha(index, alpha)
    searcher.alpha = alpha
    print(
        f"corpus: {len(videos)} val videos, {searcher.num_windows} windows in {index}; "
        f"SA-DETR on the top {k} windows per query; alpha {alpha:g} (chosen on val)"
    )
    for g in gt[:n_show]:
        hits = searcher.search(query_feats=query_features(searcher, feat_root, g["qid"]), top=3, k_windows=k)
        gt_txt = ", ".join(f"{a:g}-{b:g}" for a, b in g["relevant_windows"])
        print(f'  "{g["query"]}" (truth: {g["vid"]} {gt_txt} s)')
        for i, h in enumerate(hits):
            print(f"    {i + 1}. {h.video} {h.start:6.1f}-{h.end:6.1f} s  log score {h.log_score:.2f}")
    metrics = score(searcher, runs, alpha)
    keys = [
        "VCMR-R@1-IoU=0.5",
        "VCMR-R@10-IoU=0.5",
        "VCMR-R@10-IoU=0.7",
        "SVMR-R@1-IoU=0.5",
        "VR-R@1",
        "VR-R@10",
    ]
    print("  " + "  ".join(f"{key} {metrics[key]:.1f}" for key in keys))
    write_json(out_dir / "metrics.json", {"metrics": metrics, "alpha": alpha, "k_windows": k})
    return metrics
