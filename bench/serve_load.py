"""Load on `ikd serve`: N concurrent clients on loopback posting to /v1/translate, against `ikd translate`'s
batch throughput on the same sentences with the same model.

    python bench/serve_load.py --checkpoint RUN/checkpoint_average.pt            # Multi30K test_2016_flickr
    python bench/serve_load.py                                                   # trains a toy checkpoint first
    python bench/serve_load.py --clients 1 4 16 --requests 400 --json out.json

What runs: a real `ikd serve` (a subprocess on 127.0.0.1, a free port, the default 5 ms batching window, one
decoding thread) is started; for each client count, that many threads each send one sentence per request
(keep-alive HTTP/1.1, one connection per client) until `--requests` requests are answered or `--max-seconds`
pass; latency is from send to the parsed answer, per request. The server is then stopped with SIGTERM (its
exit status is checked), and the same sentences are translated by the Translator of `ikd translate` (same
beam, batch size and one thread) in this process, timed without the model's loading. Every server answer is
compared with `ikd translate`'s translation of that sentence (they must agree).

Sentences: --sentences FILE (raw text, one per line), else the English side of Multi30K's test_2016_flickr
from ../shared/data when the checkpoint translates English, else the toy set's test sentences (toy run).

The toy checkpoint (no --checkpoint): `ikd prepare toy`, `ikd bpe` and recipes/toy.yaml with the Transformer-
Tiny model of the paper (d 128, 4+4 layers; a random AlexNet teacher at 64 px, so 1 pseudo-token), stopped after
--toy-updates updates, in a temporary folder (or --toy-dir, kept and reused).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MULTI30K = REPO.parent / "shared" / "data" / "multi30k" / "tok"
TOY_SETTINGS = [
    "train.max_epochs=100",
    "train.valid_bleu=false",
    "train.keep_last=1",
    "train.average_last=1",
]


def ikd(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `ikd ARGS` with this interpreter (the repository first on the path), failing loudly."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "ikd.cli", *args], check=True, env=env, **kwargs)


def toy_checkpoint(folder: Path, updates: int) -> Path:
    """A toy IKD checkpoint trained for `updates` updates in `folder` (reused when already there)."""
    checkpoint = folder / "run" / "checkpoint_last.pt"
    if checkpoint.exists():
        return checkpoint
    data = folder / "toy"
    if not (data / "en-de" / "vocab.txt").exists():
        ikd("prepare", "toy", "--out", str(data), "--quiet")
        ikd("bpe", "--data", str(data), "--pair", "en-de", "--quiet")
    settings = [*TOY_SETTINGS, f"data.dir={data}", f"train.max_updates={updates}"]
    sets = [part for s in settings for part in ("--set", s)]
    ikd("train", str(REPO / "recipes" / "toy.yaml"), *sets, "--out", str(folder / "run"), "--device", "cpu", "-q")
    return checkpoint


def default_sentences(checkpoint: Path, toy_dir: Path | None) -> list[str]:
    from ikd.checkpoint import load_checkpoint

    source = load_checkpoint(checkpoint).get("src", "en")
    if toy_dir is not None:
        return (toy_dir / "toy" / "text" / f"test.{source}").read_text(encoding="utf-8").splitlines()
    path = MULTI30K / f"test_2016_flickr.lc.norm.tok.{source}"
    if not path.exists():
        raise SystemExit(f"{path}: not found; give --sentences FILE")
    return path.read_text(encoding="utf-8").splitlines()


class Server:
    """`ikd serve` in a subprocess on a free loopback port; stop() sends SIGTERM and returns its exit status."""

    def __init__(self, checkpoint: Path, beam: int, batch_size: int, timeout: float = 300.0) -> None:
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        with socket.socket() as probe:  # a free port; -q keeps uvicorn's access log out of the timing
            probe.bind(("127.0.0.1", 0))
            self.host, self.port = probe.getsockname()
        args = ["serve", "-c", str(checkpoint), "--port", str(self.port), "--beam", str(beam)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ikd.cli", *args, "--batch-size", str(batch_size), "--device", "cpu", "-q"],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("ikd serve did not start:\n" + self.process.stderr.read())
            try:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
            finally:
                connection.close()

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def load(host: str, port: int, sentences: list[str], clients: int, requests: int, max_seconds: float) -> dict:
    """`clients` threads, one sentence per request, until `requests` answers or `max_seconds`."""
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    answers: dict[int, str] = {}
    failures: list[str] = []
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                body = json.dumps({"q": sentences[i % len(sentences)]})
                start = time.perf_counter()
                connection.request("POST", "/v1/translate", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = json.loads(response.read())
                seconds = time.perf_counter() - start
                with lock:
                    if response.status != 200:
                        failures.append(f"{response.status} {payload}")
                    else:
                        latencies.append(seconds)
                        answers[i % len(sentences)] = payload["translations"][0]["text"]
        except Exception as e:  # noqa: BLE001 - reported with the figures
            with lock:
                failures.append(repr(e))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + 120)
    wall = time.perf_counter() - start
    cut = sorted(latencies)

    def quantile(q: float) -> float:
        return cut[min(len(cut) - 1, int(q * len(cut)))] if cut else float("nan")

    return {
        "clients": clients,
        "answered": len(latencies),
        "failures": failures[:5],
        "failed": len(failures),
        "wall_s": round(wall, 3),
        "sentences_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * quantile(0.5), 1),
        "p99_ms": round(1000 * quantile(0.99), 1),
        "mean_ms": round(1000 * statistics.fmean(cut), 1) if cut else None,
        "answers": answers,
    }


def batch_throughput(checkpoint: Path, sentences: list[str], beam: int, batch_size: int) -> tuple[dict, list[str]]:
    """`ikd translate`'s Translator on the sentences, one thread, timed after loading."""
    import torch

    from ikd.inference.translator import Translator

    torch.set_num_threads(1)
    translator = Translator.from_checkpoint(checkpoint, "cpu", beam, batch_size=batch_size)
    translator.translate(sentences[:8])  # warm-up
    start = time.perf_counter()
    out = translator.translate(sentences)
    seconds = time.perf_counter() - start
    figures = {"sentences": len(sentences), "wall_s": round(seconds, 3)}
    return {**figures, "sentences_per_s": round(len(out) / seconds, 2)}, out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="Model to serve (default: train a toy one).")
    parser.add_argument("--sentences", type=Path, help="Raw source sentences, one per line.")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="Concurrent client counts.")
    parser.add_argument("--requests", type=int, default=300, help="Requests per client count (at most).")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="Time per client count (at most).")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--toy-updates", type=int, default=100, help="Updates of the toy checkpoint.")
    parser.add_argument("--toy-dir", type=Path, help="Keep (and reuse) the toy data and run here.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args(argv)
    if not all(1 <= c <= 256 for c in args.clients) or not 1 <= args.requests <= 100_000:
        parser.error("--clients must be 1 to 256 and --requests 1 to 100000")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    with tempfile.TemporaryDirectory(prefix="ikd-serve-load-") as tmp:
        toy_dir = None
        checkpoint = args.checkpoint
        if checkpoint is None:
            toy_dir = args.toy_dir or Path(tmp)
            toy_dir.mkdir(parents=True, exist_ok=True)
            print(f"training a toy checkpoint ({args.toy_updates} updates) in {toy_dir}", file=sys.stderr)
            checkpoint = toy_checkpoint(toy_dir, args.toy_updates)
        if args.sentences:
            sentences = args.sentences.read_text(encoding="utf-8").splitlines()
        else:
            sentences = default_sentences(checkpoint, toy_dir)
        sentences = [s for s in sentences if s.strip()][: args.requests]

        load_before = [round(x, 2) for x in os.getloadavg()]  # other jobs on the machine slow every figure
        server = Server(checkpoint, args.beam, args.batch_size)
        runs = []
        try:
            for clients in args.clients:
                run = load(server.host, server.port, sentences, clients, len(sentences), args.max_seconds)
                runs.append(run)
                print(f"{clients:>3} clients: {run['answered']} answered ({run['failed']} failed) in "
                      f"{run['wall_s']} s: {run['sentences_per_s']} sentences/s, p50 {run['p50_ms']} ms, "
                      f"p99 {run['p99_ms']} ms", file=sys.stderr)
        finally:
            status = server.stop()
        batch, expected = batch_throughput(checkpoint, sentences, args.beam, args.batch_size)
    print(f"ikd translate (batch {args.batch_size}): {batch['sentences']} sentences in {batch['wall_s']} s: "
          f"{batch['sentences_per_s']} sentences/s", file=sys.stderr)

    disagree = sum(text != expected[i] for run in runs for i, text in run.pop("answers").items())
    report = {
        "checkpoint": checkpoint.name if args.checkpoint else f"toy ({args.toy_updates} updates)",
        "sentences": len(sentences),
        "beam": args.beam,
        "server": runs,
        "server_exit_status_after_sigterm": status,
        "ikd_translate": batch,
        "answers_differing_from_ikd_translate": disagree,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before": load_before,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 1 if disagree or status != 0 or any(run["failed"] for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
