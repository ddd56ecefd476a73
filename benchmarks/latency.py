"""End-to-end text query latency through the HTTP API on a 100k-item collection, on this CPU.

Setup (cached under ``$XMODAL_BENCH_CACHE`` or the temp folder, built once):

- the model: a random-init CLIP with openai/clip-vit-base-patch32's shapes (``build_clip_b32``):
  the text tower is ViT-B/32's (12 layers, width 512), so a query costs what a real one costs;
- the collection: ``--n`` synthetic unit vectors (the seeded CLIP-like mixture of
  ``_mixture.py``) added through ``Collection.create/add/commit`` with synthetic catalog rows,
  ``index_key="auto"`` (what a user gets by default).

Measurement: ``xmodal serve`` runs as its own process on 127.0.0.1 (as a user would run it), and
this script sends ``POST /api/search`` requests with ``k=10`` over HTTP keep-alive, one at a time,
timing each from request start to parsed JSON (client-side wall clock). Texts are distinct short
phrases, so no cache helps. After warm-up it reports p50/p95/mean, the server-side ``took_ms``,
and a concurrent run (``--clients`` threads) for throughput. Before the server starts it also
times the two parts in-process: text encoding alone and collection search alone.

Run: ``python benchmarks/latency.py [--quick] [--n 100000] [--queries 300] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import build_clip_b32, cache_dir, machine_info, write_json  # noqa: E402
from _mixture import Mixture  # noqa: E402

MODEL_NAME = "clip-vit-b32-random"
SUBJECTS = ["dog", "cat", "red car", "old bridge", "child", "bowl of soup", "mountain", "bicycle"]
PLACES = ["on a beach", "in the snow", "at night", "in a kitchen", "near a river", "in a city"]


def phrases(n: int, offset: int = 0) -> list[str]:
    out = []
    for i in range(offset, offset + n):
        subject, place = SUBJECTS[i % len(SUBJECTS)], PLACES[(i // len(SUBJECTS)) % len(PLACES)]
        out.append(f"a photo of a {subject} {place}, number {i}")
    return out


def build_collection(model_dir: Path, n: int) -> Path:
    """The ``n``-item collection for ``model_dir``; reused when it already exists."""
    from xmodal.encoders import load_encoder
    from xmodal.index import Collection, Record

    target = cache_dir() / f"latency-{n}"
    if (target / "manifest.json").is_file():
        return target
    encoder = load_encoder(str(model_dir), device="cpu", precision="fp32")
    mixture = Mixture(encoder.spec.dim, seed=0)
    collection = Collection.create(target, encoder.spec.to_dict(), overwrite=True)
    with collection:
        for start in range(0, n, 50_000):
            rows = min(50_000, n - start)
            records = [
                Record(path=f"/synthetic/{i:07d}.jpg", caption=f"synthetic item {i}")
                for i in range(start, start + rows)
            ]
            collection.add(mixture.sample(rows, seed=1 + start), records)
        collection.commit()
    return target


def in_process_parts(model_dir: Path, collection_dir: Path, queries: int) -> dict:
    """Median ms of text encoding alone (default and 1 torch thread) and of the search alone."""
    import numpy as np
    import torch

    from xmodal.encoders import load_encoder
    from xmodal.index import Collection

    encoder = load_encoder(str(model_dir), device="cpu", precision="auto")
    texts = phrases(queries, offset=10_000)
    threads = torch.get_num_threads()
    encode_ms: dict[int, list[float]] = {threads: [], 1: []}
    search_ms = []
    with Collection.open(collection_dir) as collection:
        for text in texts[:5]:
            collection.search(encoder.encode_texts([text]), k=10)
        for i, text in enumerate(texts):
            # Alternate torch's thread count query by query, so both see the same machine load.
            n = threads if i % 2 == 0 else 1
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            vector = encoder.encode_texts([text])
            t1 = time.perf_counter()
            collection.search(vector, k=10)
            t2 = time.perf_counter()
            encode_ms[n].append((t1 - t0) * 1e3)
            search_ms.append((t2 - t1) * 1e3)
        torch.set_num_threads(threads)
        info = collection.info()
    return {
        "encode_text_p50_ms": round(float(np.median(encode_ms[threads])), 2),
        "encode_text_1_thread_p50_ms": round(float(np.median(encode_ms[1])), 2),
        "torch_threads": threads,
        "collection_search_p50_ms": round(float(np.median(search_ms)), 2),
        "precision": encoder.spec.precision,
        "index_key": info.index_key,
        "index_factory": getattr(info, "index_factory", None),
        "count": info.count,
    }


def start_server(collection_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "xmodal.cli", "serve", "-c", str(collection_dir)]
    server = subprocess.Popen(
        [*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("server did not start within 300 s")


def timed_queries(port: int, texts: list[str]) -> tuple[list[float], list[float]]:
    """Client wall ms and server took_ms per query, over one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    wall, server = [], []
    for text in texts:
        body = json.dumps({"text": text, "k": 10})
        t0 = time.perf_counter()
        connection.request("POST", "/api/search", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = json.loads(response.read())
        wall.append((time.perf_counter() - t0) * 1e3)
        if response.status != 200 or len(payload["results"]) != 10:
            raise SystemExit(f"bad answer {response.status}: {str(payload)[:300]}")
        server.append(payload["took_ms"])
    connection.close()
    return wall, server


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "max_ms": round(ordered[-1], 2),
    }


def concurrent(port: int, clients: int, per_client: int) -> dict:
    results: list[list[float]] = [[] for _ in range(clients)]

    def run(n: int) -> None:
        results[n] = timed_queries(port, phrases(per_client, offset=50_000 + n * per_client))[0]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [v for r in results for v in r]
    return {
        "clients": clients,
        "queries": len(flat),
        "queries_per_s": round(len(flat) / elapsed, 2),
        **summary(flat),
    }


def write_markdown(path: Path, result: dict) -> None:
    seq, conc, parts = result["sequential"], result["concurrent"], result["parts"]
    lines = [
        "# Text query latency through the HTTP API",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['cpu_model']}, {result['machine']['cpu_cores']} cores, "
        f"torch threads {result['machine']['torch_threads']}  ",
        f"Load average (1 min) before / after: {result['load_average_1m']['before']} / "
        f"{result['load_average_1m']['after']}  ",
        f"Collection: {parts['count']:,} items, index `{parts['index_key']}` "
        f"(`{parts['index_factory']}`), ViT-B/32-sized random-init CLIP text tower",
        "",
        "| measurement | n | p50 ms | p95 ms | mean ms |",
        "|---|---|---|---|---|",
        f"| one client, end to end (HTTP) | {seq['wall']['n']} | {seq['wall']['p50_ms']} | "
        f"{seq['wall']['p95_ms']} | {seq['wall']['mean_ms']} |",
        f"| one client, server `took_ms` | {seq['server']['n']} | {seq['server']['p50_ms']} | "
        f"{seq['server']['p95_ms']} | {seq['server']['mean_ms']} |",
        f"| {conc['clients']} clients at once, end to end | {conc['n']} | {conc['p50_ms']} | "
        f"{conc['p95_ms']} | {conc['mean_ms']} |",
        "",
        f"Throughput with {conc['clients']} concurrent clients: {conc['queries_per_s']} "
        "queries/s.  ",
        f"In-process parts (p50): text encoding {parts['encode_text_p50_ms']} ms with "
        f"{parts['torch_threads']} torch threads, {parts['encode_text_1_thread_p50_ms']} ms with "
        f"1; collection search {parts['collection_search_p50_ms']} ms.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10k items, 40 queries (about a minute)")
    p.add_argument("--n", type=int, help="collection size (default 100000; quick 10000)")
    p.add_argument("--queries", type=int, help="timed sequential queries (default 300)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--port", type=int, default=7871)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    n = args.n or (10_000 if args.quick else 100_000)
    queries = args.queries or (40 if args.quick else 300)
    model_dir = build_clip_b32(cache_dir() / MODEL_NAME)
    collection_dir = build_collection(model_dir, n)
    parts = in_process_parts(model_dir, collection_dir, min(queries, 100))
    load_before = os.getloadavg()
    server = start_server(collection_dir, args.port)
    try:
        timed_queries(args.port, phrases(20, offset=90_000))  # warm-up
        wall, took = timed_queries(args.port, phrases(queries))
        conc = concurrent(args.port, args.clients, max(5, queries // args.clients))
    finally:
        server.terminate()
        server.wait(30)
    command = "python benchmarks/latency.py" + (" --quick" if args.quick else "")
    if args.n or args.queries:
        command += f" --n {n} --queries {queries}"
    result = {
        "benchmark": "latency",
        "command": command,
        "machine": machine_info(),
        "parts": parts,
        "sequential": {"wall": summary(wall), "server": summary(took)},
        "concurrent": conc,
        # Other work on the machine slows every number; the 1-minute load average says how much.
        "load_average_1m": {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "latency.json", result)
    write_markdown(args.out / "latency.md", result)
    print((args.out / "latency.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
