"""The HTTP API of `ikd serve` (FastAPI): LibreTranslate's POST /translate and GET /languages, ikd's own
POST /v1/translate, POST /v1/imagine and GET /v1/model, GET /health, GET /metrics, and the web page at /.

Every error is a JSON object {"error": "one line"} with a 4xx status for a bad request (5xx only for the
server's own trouble); nothing in a request names a file. Bodies are read here, under the size limit, rather
than by FastAPI's body parameters, so that an oversized or malformed body is refused with a clear message."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException

from ikd.errors import IkdError
from ikd.serve.batcher import Batcher, Busy, ShuttingDown
from ikd.serve.metrics import Metrics
from ikd.serve.model import LANGUAGE_NAMES, SearchKey, ServedModel, finite_or_none, png_bytes

log = logging.getLogger("ikd.serve")

PATHS = ("/", "/health", "/metrics", "/languages", "/translate", "/v1/model", "/v1/translate", "/v1/imagine")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@dataclass
class Limits:
    """What one request may ask for; each excess is a 4xx error naming the option that raises it."""

    max_body_bytes: int = 256 * 1024
    max_sentences: int = 100
    max_chars: int = 1000
    max_beam: int = 16

    def check(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise IkdError(f"--{name.replace('_', '-')} {value}: must be at least 1")


@dataclass
class Settings:
    """Server settings: limits, the default search, and the batching of concurrent requests."""

    limits: Limits = field(default_factory=Limits)
    beam: int = 5
    lenpen: float = 1.0
    window_ms: float = 5.0
    max_batch: int = 256
    max_pending: int = 4096

    def check(self) -> None:
        self.limits.check()
        if not 1 <= self.beam <= self.limits.max_beam:
            raise IkdError(f"--beam {self.beam}: must be between 1 and --max-beam ({self.limits.max_beam})")
        if not 0 <= self.window_ms <= 1000:
            raise IkdError(f"--batch-window-ms {self.window_ms}: expected 0 to 1000")
        if self.max_batch < 1 or self.max_pending < 1:
            raise IkdError("--max-batch and --max-pending must be at least 1")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------- requests
class LibreTranslateRequest(BaseModel):
    """LibreTranslate's /translate fields; others (e.g. api_key) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    q: Any = None
    source: str = "auto"
    target: str | None = None
    format: str = "text"
    alternatives: int = 0


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: Any = None
    beam: int | None = None
    nbest: int = 1
    lenpen: float | None = None
    input: Literal["raw", "tokenized", "bpe"] = "raw"
    detok: bool = False


class ImagineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: Any = None
    input: Literal["raw", "tokenized"] = "raw"
    format: Literal["json", "png"] = "json"


def _validation_message(error: ValidationError, model: type[BaseModel]) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown field '{name}' (expected {', '.join(model.model_fields)})"
    return f"'{name}': {first['msg']}"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it exceeds `limit` bytes: declared or streamed."""
    declared = request.headers.get("content-length", "")
    too_big = ApiError(413, f"the request body exceeds {limit} bytes (--max-body-bytes)")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def read_fields(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body, or (as LibreTranslate clients may send) a url-encoded form."""
    body = await read_body(request, limit)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        raise ApiError(415, "multipart bodies are not accepted; send JSON (or a url-encoded form)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"the request body is not valid UTF-8 (byte {e.start})") from None
    # curl -d sends JSON as a form unless told otherwise: a body that opens with "{" is JSON
    if kind == "application/x-www-form-urlencoded" and not text.lstrip().startswith("{"):
        form = parse_qs(text, keep_blank_values=True)
        return {k: v[0] if len(v) == 1 else v for k, v in form.items()}
    if not text.strip():
        raise ApiError(400, 'the request has no body; send a JSON object such as {"q": "a sentence"}')
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise ApiError(400, f"the request body is not valid JSON ({e.msg} at {where})") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return payload


def sentences_of(q: Any, limits: Limits) -> tuple[list[str], bool]:
    """q (a string or a list of strings) -> (sentences, whether q was a single string), within the limits."""
    if q is None:
        raise ApiError(400, "'q' is missing: give the text to translate (a string or a list of strings)")
    single = isinstance(q, str)
    items = [q] if single else q
    if not isinstance(items, list):
        raise ApiError(400, "'q' must be a string or a list of strings")
    if not items:
        raise ApiError(400, "'q' is an empty list")
    if len(items) > limits.max_sentences:
        raise ApiError(
            400, f"'q' holds {len(items)} sentences; at most {limits.max_sentences} per request (--max-sentences)"
        )
    for i, item in enumerate(items):
        where = "'q'" if single else f"'q[{i}]'"
        if not isinstance(item, str):
            raise ApiError(400, f"{where} must be a string, not {type(item).__name__}")
        if len(item) > limits.max_chars:
            raise ApiError(
                400, f"{where} has {len(item)} characters; at most {limits.max_chars} per sentence (--max-chars)"
            )
    return items, single


# ---------------------------------------------------------------------------------------------- the app
def create_app(served: ServedModel, settings: Settings | None = None) -> FastAPI:
    """The app for one loaded model. Its lifespan starts and stops the search thread (use TestClient as a
    context manager)."""
    settings = settings or Settings()
    settings.check()
    limits = settings.limits
    metrics = Metrics(PATHS)
    batcher = Batcher(
        lambda key, items: served.translate(key, items),
        window_s=settings.window_ms / 1000.0,
        max_batch=settings.max_batch,
        max_pending=settings.max_pending,
        on_batch=metrics.batch,
    )
    page = resources.files("ikd.serve").joinpath("page.html").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="ikd", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.served, app.state.batcher, app.state.metrics = served, batcher, metrics
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        path = request.url.path
        allowed = (e.headers or {}).get("Allow", "")
        message = {404: f"no such endpoint: {path}", 405: f"{request.method} {path} is not allowed (use {allowed})"}
        return JSONResponse(
            {"error": message.get(e.status_code, str(e.detail))}, status_code=e.status_code, headers=e.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"bad request: {e.errors()[0]['msg']}"}, status_code=400)

    async def run(work) -> Any:
        """Await a batcher future; its failures become API errors (the server itself goes on)."""
        try:
            return await asyncio.wrap_future(work())
        except Busy as e:
            raise ApiError(503, f"the server is busy ({e}); try again shortly") from None
        except ShuttingDown as e:
            raise ApiError(503, str(e)) from None
        except IkdError as e:
            raise ApiError(400, str(e)) from None
        except Exception:
            log.exception("request failed")
            raise ApiError(500, "internal error while translating (the server's log has the details)") from None

    def parse(model: type[BaseModel], payload: dict[str, Any]) -> Any:
        try:
            return model.model_validate(payload)
        except ValidationError as e:
            raise ApiError(400, _validation_message(e, model)) from None

    def search_key(input_mode: str, beam: int | None, lenpen: float | None, nbest: int) -> SearchKey:
        beam = settings.beam if beam is None else beam
        lenpen = settings.lenpen if lenpen is None else lenpen
        if not 1 <= beam <= limits.max_beam:
            raise ApiError(400, f"'beam' {beam}: must be between 1 and {limits.max_beam} (--max-beam)")
        if not 1 <= nbest <= beam:
            raise ApiError(400, f"'nbest' {nbest}: must be between 1 and the beam size ({beam})")
        if not (math.isfinite(lenpen) and 0.0 <= lenpen <= 10.0):
            raise ApiError(400, f"'lenpen' {lenpen}: must be between 0 and 10")
        return SearchKey(input_mode, beam, float(lenpen))

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "source": served.source,
            "target": served.target,
            "pending": batcher.pending,
            "uptime_s": round(time.monotonic() - metrics.started, 3),
        }

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(batcher.pending), media_type="text/plain; version=0.0.4")

    @app.get("/languages")
    async def languages() -> list[dict[str, Any]]:
        def entry(code: str, targets: list[str]) -> dict[str, Any]:
            return {"code": code, "name": LANGUAGE_NAMES.get(code, code), "targets": targets}

        return [entry(served.source, [served.target]), entry(served.target, [])]

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        defaults = {"beam": settings.beam, "lenpen": settings.lenpen}
        return {**served.identity, "defaults": defaults, "limits": asdict(limits)}

    @app.post("/translate")
    async def libretranslate(request: Request) -> dict[str, Any]:
        req = parse(LibreTranslateRequest, await read_fields(request, limits.max_body_bytes))
        texts, single = sentences_of(req.q, limits)
        if req.source not in ("auto", served.source):
            raise ApiError(400, f"source language '{req.source}' is not supported: this server translates "
                           f"{served.source} to {served.target}")
        if req.target is not None and req.target != served.target:
            raise ApiError(400, f"target language '{req.target}' is not supported: this server translates "
                           f"{served.source} to {served.target}")
        if req.format != "text":
            raise ApiError(400, f"format '{req.format}' is not supported; send plain text (format 'text')")
        if not 0 <= req.alternatives < settings.beam:
            raise ApiError(400, f"'alternatives' {req.alternatives}: must be between 0 and {settings.beam - 1} "
                           "(the beam size less one)")
        key = search_key("raw", None, None, 1 + req.alternatives)
        found = await run(lambda: batcher.submit(key, texts))
        best = [served.detokenize(hyps[0][0]) for hyps in found]
        out: dict[str, Any] = {"translatedText": best[0] if single else best}
        if req.alternatives:
            alts = [[served.detokenize(text) for text, _ in hyps[1 : 1 + req.alternatives]] for hyps in found]
            out["alternatives"] = alts[0] if single else alts
        if req.source == "auto":  # no detection: the model has one source language
            detected = {"language": served.source, "confidence": 0.0}
            out["detectedLanguage"] = detected if single else [detected] * len(texts)
        return out

    @app.post("/v1/translate")
    async def translate(request: Request) -> dict[str, Any]:
        req = parse(TranslateRequest, await read_fields(request, limits.max_body_bytes))
        texts, _ = sentences_of(req.q, limits)
        key = search_key(req.input, req.beam, req.lenpen, req.nbest)
        found = await run(lambda: batcher.submit(key, texts))

        def shown(text: str) -> str:
            return served.detokenize(text) if req.detok else text

        translations = []
        for hyps in found:
            nbest = [{"text": shown(text), "score": finite_or_none(score)} for text, score in hyps[: req.nbest]]
            translations.append({**nbest[0], "nbest": nbest})
        search = {"beam": key.beam, "nbest": req.nbest, "lenpen": key.lenpen, "input": req.input, "detok": req.detok}
        return {"translations": translations, "search": search, "model": served.identity}

    @app.post("/v1/imagine")
    async def imagine(request: Request) -> Response:
        req = parse(ImagineRequest, await read_fields(request, limits.max_body_bytes))
        if not served.multimodal:
            raise ApiError(
                422, "this server's model is text-only: it has no pseudo-tokens and imagines no image "
                "(/v1/imagine needs an IKD checkpoint)"
            )
        if isinstance(req.q, list):
            raise ApiError(400, "'q' must be one sentence (a string) for /v1/imagine")
        (text,), _ = sentences_of(req.q, limits)
        if not text.strip():
            raise ApiError(400, "'q' is empty")
        if req.format == "png" and not served.identity["imagines"]:
            raise ApiError(422, "this checkpoint holds no student (a translation-only export), so no image")
        seen = await run(lambda: batcher.call(lambda: served.imagine(text, req.input)))
        png = png_bytes(seen.image) if seen.image is not None else None
        if req.format == "png":
            return Response(png, media_type="image/png")
        heads, p, t = seen.attention.shape
        image = None
        if png is not None:
            h, w = seen.image.shape[:2]
            image = {"png_base64": base64.b64encode(png).decode("ascii"), "width": w, "height": h}
        attention = {
            "layer": "first multimodal encoder layer: pseudo-token queries over the source tokens",
            "heads": heads,
            "pseudo_tokens": p,
            "grid": list(seen.grid),
            "layout": seen.layout,
            "weights": seen.attention.astype("float64").round(5).tolist(),
        }
        return JSONResponse({"source": text, "pieces": seen.pieces, "attention": attention, "image": image})

    return app


class _MetricsMiddleware:
    """Counts every HTTP request by path and status, with its time to the end of the response."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.request(scope["path"], status, time.perf_counter() - start)
