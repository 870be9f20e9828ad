"""Throughput of a running `sadetr serve` under concurrent clients (docs/deploy.md "Serving").

    python tools/serve_load.py --url http://127.0.0.1:8000 --data DEMO/data --clients 8 --out torch.json

Every validation query of a `sadetr demo` / `sadetr synth` dataset (its `annotations/val.jsonl` and
`features/`) is sent once to `/v1/moments` as precomputed features (the sources /healthz lists) and query
token features, by `--clients` threads at once, `--rounds` times over. Writes requests/s, latency
percentiles, the server's /healthz (its backend and batching counts) and every answer's windows by qid;
`--compare OTHER.json` reports how many top-1 windows (and full window lists) equal another run's.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _payloads(data: Path, sources: list[str]) -> list[tuple[str, bytes, bytes, float]]:
    """(qid, video features .npy, text features .npy, duration) of every val query."""
    out = []
    feats: dict[str, bytes] = {}
    for line in (data / "annotations" / "val.jsonl").read_text().splitlines():
        rec = json.loads(line)
        vid, qid = rec["vid"], str(rec["qid"])
        if vid not in feats:
            parts = [np.load(data / "features" / s / f"{vid}.npz")["features"] for s in sources]
            n = min(len(p) for p in parts)
            feats[vid] = _npy(np.concatenate([p[:n] for p in parts], axis=1).astype(np.float32))
        text = np.load(data / "features" / "clip_text_features" / f"qid{qid}.npz")["last_hidden_state"]
        out.append((qid, feats[vid], _npy(text.astype(np.float32)), float(rec["duration"])))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (annotations/, features/)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="times every query is sent (the first warms up)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--compare", type=Path, help="an earlier --out of another server to compare answers with")
    args = p.parse_args(argv)

    with httpx.Client(base_url=args.url, timeout=300) as client:
        health = client.get("/healthz").json()
        payloads = _payloads(args.data, health["video_sources"])

        def ask(item: tuple[str, bytes, bytes, float]) -> tuple[str, float, Any]:
            qid, video, text, duration = item
            t = time.perf_counter()
            resp = client.post(
                "/v1/moments",
                data={"query": "q", "qid": qid, "duration": str(duration)},
                files={"features": ("f.npy", video), "text_features": ("t.npy", text)},
            )
            resp.raise_for_status()
            return qid, time.perf_counter() - t, resp.json()["pred_relevant_windows"]

        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(ask, payloads[: 4 * args.clients]))  # warm-up
            t0 = time.perf_counter()
            results = []
            for _ in range(args.rounds):
                results += list(pool.map(ask, payloads))
            seconds = time.perf_counter() - t0
        health = client.get("/healthz").json()
    latencies = sorted(r[1] for r in results)
    report = {
        "requests": len(results),
        "clients": args.clients,
        "seconds": seconds,
        "requests_per_s": len(results) / seconds,
        "latency_p50_s": statistics.median(latencies),
        "latency_p90_s": latencies[int(0.9 * (len(latencies) - 1))],
        "backend": health.get("backend"),
        "batching": health.get("batching"),
        "answers": {qid: windows for qid, _, windows in results},
    }
    line = (
        f"{report['backend']}: {report['requests']} requests by {args.clients} clients in {seconds:.1f} s = "
        f"{report['requests_per_s']:.1f} requests/s; latency p50 {1000 * report['latency_p50_s']:.0f} ms, "
        f"p90 {1000 * report['latency_p90_s']:.0f} ms"
    )
    if report["batching"]:
        b = report["batching"]
        line += f"; {b['mean_requests_per_run']:.1f} requests per forward pass"
    if args.compare is not None:
        other = json.loads(args.compare.read_text())["answers"]
        mine = report["answers"]
        same_top1 = sum(mine[q][0][:2] == other[q][0][:2] for q in mine)
        same_all = sum([w[:2] for w in mine[q]] == [w[:2] for w in other[q]] for q in mine)
        report["compare"] = {"queries": len(mine), "same_top1": same_top1, "same_windows": same_all}
        n = len(mine)
        line += f"; vs {args.compare.name}: top-1 equal {same_top1}/{n}, all windows {same_all}/{n}"
    args.out.write_text(json.dumps(report, indent=1))
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
