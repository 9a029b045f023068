"""`ikd serve`: the translation API and web page over HTTP (FastAPI under uvicorn; `pip install 'ikd[serve]'`)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import typer

from ikd.commands import device as device_option
from ikd.commands import quiet
from ikd.errors import IkdError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port (port 0: a free one), or a one-line error naming the address."""
    if not 0 <= port <= 65535:
        raise IkdError(f"--port {port}: expected 0 to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise IkdError(f"--host {host}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise IkdError(f"{host}:{port}: cannot listen there ({(e.strerror or str(e)).lower()})") from None
    sock.listen(2048)  # connections made once the address is printed wait for uvicorn instead of being refused
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        checkpoint: list[Path] = typer.Option(
            ...,
            "--checkpoint",
            "-c",
            help="A checkpoint written by `ikd train` or a folder from `ikd export`; repeat it to serve the "
            "ensemble of several models (as `ikd translate -c A -c B`).",
        ),
        host: str = typer.Option(
            "127.0.0.1", "--host", help="Address to listen on (default: this machine only; the API has no login)."
        ),
        port: int = typer.Option(8080, "--port", help="Port to listen on (0: any free port, printed at start)."),
        beam: int = typer.Option(5, "--beam", "-b", help="Default beam size (requests may ask another)."),
        lenpen: float = typer.Option(1.0, "--lenpen", help="Default length penalty."),
        max_len_a: float = typer.Option(0.0, "--max-len-a", help="Output length cap a*src_len+b, as `ikd translate`."),
        max_len_b: int = typer.Option(200, "--max-len-b", help="See --max-len-a."),
        batch_window_ms: float = typer.Option(
            5.0, "--batch-window-ms", help="How long to collect concurrent requests into one search (0: no wait)."
        ),
        max_batch: int = typer.Option(256, "--max-batch", help="Stop collecting at this many sentences."),
        batch_size: int = typer.Option(128, "--batch-size", help="Sentences per search batch, as `ikd translate`."),
        max_pending: int = typer.Option(
            4096, "--max-pending", help="Sentences that may wait at once; more are refused with 503."
        ),
        max_body_bytes: int = typer.Option(256 * 1024, "--max-body-bytes", help="Largest request body (413 above)."),
        max_sentences: int = typer.Option(100, "--max-sentences", help="Sentences per request (400 above)."),
        max_chars: int = typer.Option(1000, "--max-chars", help="Characters per sentence (400 above)."),
        max_beam: int = typer.Option(16, "--max-beam", help="Largest beam a request may ask for."),
        device: str = device_option(),
        amp: str = typer.Option(None, "--amp", help="auto|bf16|fp16|off on CUDA (default: the recipe's)."),
        threads: int = typer.Option(0, "--threads", help="CPU threads for decoding (0: 1, the fastest for search)."),
        quiet_: bool = quiet(),
    ) -> None:
        """Serve a model over HTTP: LibreTranslate's POST /translate and GET /languages, ikd's POST
        /v1/translate (beam, n-best, scores, input mode, the model's identity) and POST /v1/imagine (IKD
        models: the imagined image and the pseudo-token attention), GET /health, GET /metrics (Prometheus),
        and a web page at /. Concurrent requests are searched together. Ctrl-C or SIGTERM stops it."""
        from ikd.console import info, is_quiet, warn

        if amp is not None and amp not in ("auto", "bf16", "fp16", "off"):
            raise IkdError(f"--amp {amp!r}: expected auto, bf16, fp16 or off")
        try:
            import uvicorn

            from ikd.serve.app import Limits, Settings, create_app
        except ImportError as e:
            missing = f"ikd serve needs FastAPI and uvicorn ({e.name} is missing)"
            raise IkdError(f"{missing}: pip install 'ikd[serve]'") from None
        from ikd.serve.model import ServedModel

        settings = Settings(
            Limits(max_body_bytes, max_sentences, max_chars, max_beam), beam, lenpen, batch_window_ms, max_batch,
            max_pending,
        )
        settings.check()
        if batch_size < 1:
            raise IkdError(f"--batch-size {batch_size}: must be at least 1")
        sock = bind(host, port)
        try:
            served = ServedModel.load(
                checkpoint, device, amp, max_len_a=max_len_a, max_len_b=max_len_b, batch_size=batch_size, warn=warn
            )
            app = create_app(served, settings)
            kind = "IKD" if served.multimodal else "text-only"
            members = f", ensemble of {len(checkpoint)}" if len(checkpoint) > 1 else ""
            if host not in LOOPBACK:
                warn(f"--host {host}: the API is open to whoever can reach this address (it has no login)")
            info(
                f"serving {served.source}-{served.target} ({kind}{members}) on {served.loaded.device} at "
                f"{url_of(sock)} (Ctrl-C to stop)"
            )
            config = uvicorn.Config(
                app,
                log_level="warning" if is_quiet() else "info",
                access_log=not is_quiet(),
                timeout_graceful_shutdown=10,
            )
            stopped_by = _run(uvicorn.Server(config), sock, threads, served.loaded.device)
        finally:
            sock.close()
        info(f"stopped{f' ({stopped_by})' if stopped_by else ''}")


def _run(server, sock: socket.socket, threads: int, device) -> str:
    """Run uvicorn until Ctrl-C or SIGTERM; returns the signal's name ('' if it ended otherwise). uvicorn
    shuts down gracefully on the signal and then raises it again: the handlers here only note it, so the
    command ends normally (exit status 0) after a clean stop."""
    from ikd.inference.loading import decoding_threads

    received: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda sig, frame: received.append(sig)) for s in handled}
    try:
        with decoding_threads(threads, device):
            server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return signal.Signals(received[0]).name if received else ""
