"""Load check of `sadetr serve`: concurrent clients sending a mix of good and bad requests.

    python tools/load_check.py                                  # 8 clients x 200 requests, own server
    python tools/load_check.py --clients 8 --requests 200 --url http://127.0.0.1:8000

Without --url it starts `sadetr serve` itself (a subprocess, `--threads 1`) on a tiny untrained model
with a tiny CLIP and an index of 8 random videos, all written to a temp folder (nothing downloaded). Each
client cycles through the request kinds of `KINDS` (good ones expect 200; bad ones 413 or 422), so every
kind is sent equally often. It prints, per kind, the statuses seen and the latencies, then p50/p95 of
all requests, of the good and of the bad ones, and a JSON summary. Exit status 1 when any answer is a
5xx, has another status than its kind expects, or is lost (a transport error or timeout: no answer).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Request = tuple[str, str, dict[str, Any]]  # (method, path, httpx keyword arguments)


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def announcing(rows: int, dim: int) -> bytes:
    """A .npy header announcing [rows, dim] float32, followed by one row only."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    return buf.getvalue() + np.ones(dim, np.float32).tobytes()


def request_kinds(
    health: dict[str, Any], rng: np.random.Generator
) -> dict[str, tuple[int, Callable[[int], Request]]]:
    """kind -> (expected status, make(i) -> request) for a server described by its /healthz."""
    dim, text_dim = int(health["feature_dim"]), int(health["text_dim"])
    feats = npy(rng.normal(size=(30, dim)).astype(np.float32))  # 60 s at 2 s clips
    tokens = rng.normal(size=(8, text_dim)).astype(np.float32)
    text = {"text_features": ("t.npy", npy(tokens))}
    nan = rng.normal(size=(30, dim)).astype(np.float32)
    nan[3, 1] = np.nan

    def moments(files: dict[str, Any], **data: str) -> Callable[[int], Request]:
        return lambda i: ("POST", "/v1/moments", {"data": {"query": f"the dog {i}", **data}, "files": files})

    kinds: dict[str, tuple[int, Callable[[int], Request]]] = {
        "moments: features + token features": (200, moments({"features": ("f.npy", feats), **text})),
        "bad: NaN in features": (422, moments({"features": ("f.npy", npy(nan)), **text})),
        "bad: wrong feature width": (
            422,
            moments({"features": ("f.npy", npy(np.ones((5, dim + 1), np.float32)))}),
        ),
        "bad: .npy header of 2^40 rows": (422, moments({"features": ("f.npy", announcing(2**40, dim))})),
        "bad: a text file as features": (422, moments({"features": ("f.npy", b"0.1 0.2\n0.3 0.4\n")})),
        "bad: duration 1e6 s for 60 s": (
            422,
            moments({"features": ("f.npy", feats), **text}, duration="1e6"),
        ),
        "bad: zero-width-space query": (
            422,
            lambda i: (
                "POST",
                "/v1/moments",
                {"data": {"query": "\u200b"}, "files": {"features": ("f.npy", feats)}},
            ),
        ),
    }
    if health["accepts_text"]:
        kinds["moments: features + sentence"] = (200, moments({"features": ("f.npy", feats)}))
    limit = float(health["limits"]["max_upload_mb"])
    if limit <= 8:
        big = {"features": ("f.npy", b"\0" * int((limit + 0.5) * 2**20))}
        kinds["bad: upload over the limit"] = (413, moments(big))
    if health["index"] is not None:
        q = tokens.tolist()
        kinds["search: query features"] = (
            200,
            lambda i: ("POST", "/v1/search", {"json": {"query_features": q, "top": 5}}),
        )
        if health["accepts_text"]:
            kinds["search: sentence"] = (
                200,
                lambda i: ("POST", "/v1/search", {"json": {"query": f"a cat {i}"}}),
            )
        kinds["bad: search top 0"] = (
            422,
            lambda i: ("POST", "/v1/search", {"json": {"query_features": q, "top": 0}}),
        )
        kinds["bad: search not JSON"] = (
            422,
            lambda i: (
                "POST",
                "/v1/search",
                {"content": b"{no", "headers": {"content-type": "application/json"}},
            ),
        )
    return kinds


def run_clients(url: str, clients: int, requests: int, timeout_s: float) -> list[tuple[str, int, int, float]]:
    """(kind, expected, status or -1 when lost, seconds) of clients x requests requests."""
    import httpx

    health = httpx.get(f"{url}/healthz", timeout=30).json()
    kinds = request_kinds(health, np.random.default_rng(0))
    names = sorted(kinds)
    results: list[tuple[str, int, int, float]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=timeout_s) as c:
            for i in range(requests):
                name = names[(i + k) % len(names)]
                expected, make = kinds[name]
                method, path, kwargs = make(i)
                start = time.perf_counter()
                try:
                    status = c.request(method, path, **kwargs).status_code
                except httpx.HTTPError:
                    status = -1  # lost: no answer
                with lock:
                    results.append((name, expected, status, time.perf_counter() - start))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarise(
    results: list[tuple[str, int, int, float]], wall_s: float, sent: int
) -> tuple[str, dict[str, Any]]:
    """A printable table and a JSON-able summary; `summary["ok"]` is the verdict."""
    by_kind: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for name, expected, status, seconds in results:
        by_kind[name].append((expected, status, seconds))
    lines = [f"{'kind':<40} {'n':>5} {'statuses':<18} {'p50 ms':>8} {'p95 ms':>8}"]
    for name in sorted(by_kind):
        rows = by_kind[name]
        statuses = ",".join(f"{s}x{n}" for s, n in sorted(Counter(s for _, s, _ in rows).items()))
        lat = [1000 * t for _, _, t in rows]
        p50, p95 = percentile(lat, 0.5), percentile(lat, 0.95)
        lines.append(f"{name:<40} {len(rows):>5} {statuses:<18} {p50:>8.1f} {p95:>8.1f}")
    good = [1000 * t for _, e, _, t in results if e == 200]
    bad = [1000 * t for _, e, _, t in results if e != 200]
    every = good + bad
    server_errors = sum(1 for _, _, s, _ in results if s >= 500)
    lost = sent - sum(1 for _, _, s, _ in results if s != -1)
    unexpected = sum(1 for _, e, s, _ in results if s != e and s != -1)
    summary = {
        "requests": sent,
        "answered": sent - lost,
        "lost": lost,
        "server_errors_5xx": server_errors,
        "unexpected_status": unexpected,
        "wall_s": round(wall_s, 1),
        "requests_per_s": round(sent / wall_s, 1),
        "p50_ms": round(percentile(every, 0.5), 1),
        "p95_ms": round(percentile(every, 0.95), 1),
        "good_p50_ms": round(percentile(good, 0.5), 1),
        "good_p95_ms": round(percentile(good, 0.95), 1),
        "bad_p50_ms": round(percentile(bad, 0.5), 1),
        "bad_p95_ms": round(percentile(bad, 0.95), 1),
        "cpu_count": os.cpu_count(),
    }
    summary["ok"] = lost == 0 and server_errors == 0 and unexpected == 0
    s = summary
    lines.append(
        f"all {sent}: p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms; good p50 {s['good_p50_ms']} / "
        f"p95 {s['good_p95_ms']} ms; bad p50 {s['bad_p50_ms']} / p95 {s['bad_p95_ms']} ms; "
        f"{s['requests_per_s']} requests/s"
    )
    lines.append(f"5xx: {server_errors}, lost: {lost}, unexpected status: {unexpected}")
    return "\n".join(lines), summary


# ---------------------------------------------------------------- a server of its own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_server_files(root: Path, n_videos: int = 8) -> list[str]:
    """A tiny model, CLIP and index under `root`; the `sadetr serve` arguments that load them."""
    from sadetr.corpus.index import build_index
    from sadetr.inference.tiny import save_tiny_clip_checkpoint
    from sadetr.video.tiny import TINY_CLIP_VIDEO_DIM, make_tiny_clip

    checkpoint = save_tiny_clip_checkpoint(root / "m.ckpt")
    clip = make_tiny_clip(root / "clip", full_vocab=True)
    feats = root / "features" / "clip_features"
    feats.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n_videos):
        np.savez(
            feats / f"vid{k}.npz", features=rng.normal(size=(40, TINY_CLIP_VIDEO_DIM)).astype(np.float32)
        )
    index = build_index(checkpoint, root / "features", root / "index")
    return ["--checkpoint", str(checkpoint), "--clip", str(clip), "--index", str(index)]


def start_server(args: list[str], threads: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "sadetr", "serve", *args, "--port", str(port), "--threads", str(threads)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the server did not start:\n" + log_path.read_text()[-3000:])
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running `sadetr serve` (default: start one on a tiny model)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--requests", type=int, default=200, help="requests per client (default 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server it starts (default 1)")
    p.add_argument("--timeout-s", type=float, default=120.0, help="client timeout per request (default 120)")
    p.add_argument("--json", type=Path, help="also write the summary as JSON here")
    args = p.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        p.error("--clients and --requests must be >= 1")
    with tempfile.TemporaryDirectory(prefix="sadetr-load-") as tmp:
        proc = None
        url = args.url
        if url is None:
            serve_args = tiny_server_files(Path(tmp))
            proc, url = start_server(
                [*serve_args, "--max-upload-mb", "1"], args.threads, Path(tmp) / "server.log"
            )
        try:
            t0 = time.monotonic()
            results = run_clients(url.rstrip("/"), args.clients, args.requests, args.timeout_s)
            wall = time.monotonic() - t0
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    table, summary = summarise(results, wall, args.clients * args.requests)
    summary["clients"], summary["requests_per_client"] = args.clients, args.requests
    print(table)
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
