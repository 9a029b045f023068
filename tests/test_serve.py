"""`ikd serve`'s API through FastAPI's test client: every endpoint against the Translator and the analysis
code on the same sentences, every error as a one-line JSON 4xx, the batching of concurrent requests, and the
command's start-up errors. The toy IKD checkpoint and a text-only model made from it stand in for real ones."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_train import text_only_copy

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'ikd[serve]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from ikd.cli import main  # noqa: E402
from ikd.fileio import sha256_file  # noqa: E402
from ikd.inference.translator import Translator  # noqa: E402
from ikd.serve.app import Limits, Settings, create_app  # noqa: E402
from ikd.serve.batcher import Batcher, Busy, ShuttingDown  # noqa: E402
from ikd.serve.model import SearchKey, ServedModel  # noqa: E402

SENTENCES = ["A small red circle is above a big blue square.", "a big green cross .", "A yellow triangle!"]
TEXT_MAX_LEN = 6  # the text-only model is untrained: keep its outputs short


@pytest.fixture(scope="module")
def ikd_served(toy_checkpoint: Path) -> ServedModel:
    return ServedModel.load([toy_checkpoint], "cpu")


@pytest.fixture(scope="module")
def text_checkpoint(toy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return text_only_copy(toy_checkpoint, tmp_path_factory.mktemp("serve_text") / "text.pt")


@pytest.fixture(scope="module")
def text_served(text_checkpoint: Path) -> ServedModel:
    return ServedModel.load([text_checkpoint], "cpu", max_len_b=TEXT_MAX_LEN)


@pytest.fixture
def client(ikd_served: ServedModel):
    with TestClient(create_app(ikd_served, Settings(window_ms=1.0))) as c:
        yield c


@pytest.fixture
def text_client(text_served: ServedModel):
    with TestClient(create_app(text_served, Settings(window_ms=1.0))) as c:
        yield c


def reference(checkpoint: Path, sentences: list[str], beam: int = 5, n: int = 1, **options) -> list:
    """What the Python API (and so `ikd translate`) gives: the n best (text, score) of each sentence."""
    translator = Translator.from_checkpoint(checkpoint, "cpu", beam, **options)
    return translator.translate_nbest(sentences, n)


def error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    return body["error"]


# ---------------------------------------------------------------------------------------------- LibreTranslate
def test_libretranslate_list_and_string(client, toy_checkpoint: Path) -> None:
    expected = [nbest[0][0] for nbest in reference(toy_checkpoint, SENTENCES, detok=True)]
    r = client.post("/translate", json={"q": SENTENCES, "source": "en", "target": "de", "format": "text"})
    assert r.status_code == 200 and r.json() == {"translatedText": expected}
    r = client.post("/translate", json={"q": SENTENCES[1], "source": "en", "target": "de", "api_key": "ignored"})
    assert r.json() == {"translatedText": expected[1]}
    assert expected[1][-1] == "." and expected[1][-2] != " "  # detokenised, as LibreTranslate answers


def test_libretranslate_alternatives_auto_and_form(client, toy_checkpoint: Path) -> None:
    nbest = reference(toy_checkpoint, SENTENCES[:1], n=3, detok=True)[0]
    r = client.post("/translate", json={"q": SENTENCES[0], "source": "auto", "target": "de", "alternatives": 2})
    assert r.json() == {
        "translatedText": nbest[0][0],
        "alternatives": [nbest[1][0], nbest[2][0]],
        "detectedLanguage": {"language": "en", "confidence": 0.0},
    }
    form = client.post("/translate", data={"q": SENTENCES[0], "source": "en", "target": "de"})
    assert form.json() == {"translatedText": nbest[0][0]}


def test_languages(client) -> None:
    assert client.get("/languages").json() == [
        {"code": "en", "name": "English", "targets": ["de"]},
        {"code": "de", "name": "German", "targets": []},
    ]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"q": "a", "source": "fr", "target": "de"}, "source language 'fr' is not supported"),
        ({"q": "a", "source": "en", "target": "cs"}, "target language 'cs' is not supported"),
        ({"q": "a", "source": "en", "target": "de", "format": "html"}, "format 'html' is not supported"),
        ({"q": "a", "source": "en", "target": "de", "alternatives": 5}, "'alternatives' 5: must be between 0 and 4"),
        ({"source": "en", "target": "de"}, "'q' is missing"),
        ({"q": 3, "source": "en"}, "'q' must be a string or a list of strings"),
        ({"q": ["a", 4], "source": "en"}, "'q[1]' must be a string, not int"),
        ({"q": [], "source": "en"}, "'q' is an empty list"),
        ({"q": "a", "alternatives": "many"}, "'alternatives': Input should be a valid integer"),
    ],
)
def test_libretranslate_errors(client, body: dict, words: str) -> None:
    assert words in error(client.post("/translate", json=body), 400)


# ---------------------------------------------------------------------------------------------- /v1/translate
@pytest.mark.parametrize(("beam", "nbest", "lenpen"), [(5, 3, 1.0), (4, 1, 0.5), (1, 1, 1.0)])
def test_v1_translate_equals_the_translator(client, toy_checkpoint: Path, beam: int, nbest: int, lenpen: float):
    expected = reference(toy_checkpoint, SENTENCES, beam, nbest, lenpen=lenpen)
    r = client.post("/v1/translate", json={"q": SENTENCES, "beam": beam, "nbest": nbest, "lenpen": lenpen})
    body = r.json()
    assert r.status_code == 200
    assert body["search"] == {"beam": beam, "nbest": nbest, "lenpen": lenpen, "input": "raw", "detok": False}
    for got, want in zip(body["translations"], expected):
        assert [h["text"] for h in got["nbest"]] == [text for text, _ in want]
        assert got["text"] == want[0][0]
        assert [h["score"] for h in got["nbest"]] == pytest.approx([s for _, s in want], abs=1e-6)


def test_v1_translate_input_modes_and_detok(client, ikd_served: ServedModel, toy_checkpoint: Path) -> None:
    tokenized = "a small red circle is above a big blue square ."
    pieces = " ".join(ikd_served.translator(SearchKey("tokenized", 5, 1.0)).encoder.pieces(tokenized))
    assert "@@" in pieces  # the toy BPE splits some words, so the three modes differ in what they read
    want = reference(toy_checkpoint, [SENTENCES[0]])[0][0][0]
    for mode, text in (("raw", SENTENCES[0]), ("tokenized", tokenized), ("bpe", pieces)):
        r = client.post("/v1/translate", json={"q": text, "input": mode})
        assert r.json()["translations"][0]["text"] == want, mode
    detok = client.post("/v1/translate", json={"q": SENTENCES[0], "detok": True}).json()
    assert detok["translations"][0]["text"] == reference(toy_checkpoint, [SENTENCES[0]], detok=True)[0][0][0]
    empty = client.post("/v1/translate", json={"q": ["", "a big green cross ."]}).json()["translations"]
    assert empty[0]["text"] == "" and empty[1]["text"]


def test_v1_translate_names_the_model(client, toy_checkpoint: Path) -> None:
    model = client.post("/v1/translate", json={"q": "a cross"}).json()["model"]
    assert model["checkpoints"] == [{"name": toy_checkpoint.name, "sha256": sha256_file(toy_checkpoint)}]
    assert (model["source"], model["target"], model["multimodal"], model["imagines"]) == ("en", "de", True, True)
    assert model["recipe"]["d_model"] == 32 and model["recipe"]["vision"]["backbone"] == "alexnet"
    assert model["recipe"]["kd"]["distance"] == "cosine"
    assert str(toy_checkpoint.parent) not in str(model)  # names, no local paths
    info = client.get("/v1/model").json()
    assert info["defaults"] == {"beam": 5, "lenpen": 1.0} and info["limits"]["max_sentences"] == 100


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"q": "a", "beem": 3}, "unknown field 'beem' (expected q, beam, nbest, lenpen, input, detok)"),
        ({"q": "a", "beam": 17}, "'beam' 17: must be between 1 and 16 (--max-beam)"),
        ({"q": "a", "beam": 0}, "'beam' 0: must be between 1 and 16"),
        ({"q": "a", "beam": 2, "nbest": 3}, "'nbest' 3: must be between 1 and the beam size (2)"),
        ({"q": "a", "lenpen": -1}, "'lenpen' -1.0: must be between 0 and 10"),
        ({"q": "a", "input": "xml"}, "'input': Input should be 'raw', 'tokenized' or 'bpe'"),
        ({"q": "a", "detok": "maybe"}, "'detok': Input should be a valid boolean"),
        ({"q": {"text": "a"}}, "'q' must be a string or a list of strings"),
    ],
)
def test_v1_translate_errors(client, body: dict, words: str) -> None:
    assert words in error(client.post("/v1/translate", json=body), 400)


def test_bodies_that_are_not_a_json_object(client) -> None:
    post = client.post
    assert "not valid JSON" in error(post("/v1/translate", content=b"{q: 1}", headers=_json()), 400)
    assert "must be a JSON object" in error(post("/v1/translate", content=b'["a"]', headers=_json()), 400)
    assert "has no body" in error(post("/v1/translate", content=b"", headers=_json()), 400)
    assert "not valid UTF-8 (byte 7)" in error(post("/v1/translate", content=b'{"q": "\xff"}', headers=_json()), 400)
    multipart = post("/translate", files={"file": ("a.txt", b"a dog")})
    assert "multipart bodies are not accepted" in error(multipart, 415)
    # curl -d sends a form content type: a JSON object body is still read as JSON
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    curl = post("/v1/translate", content=b'{"q": "a cross"}', headers=form)
    assert curl.status_code == 200


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


def test_limits_are_4xx_naming_their_option(ikd_served: ServedModel) -> None:
    limits = Limits(max_body_bytes=400, max_sentences=3, max_chars=20, max_beam=4)
    with TestClient(create_app(ikd_served, Settings(limits, beam=4))) as c:
        too_many = c.post("/v1/translate", json={"q": ["a"] * 4})
        assert error(too_many, 400) == "'q' holds 4 sentences; at most 3 per request (--max-sentences)"
        too_long = c.post("/translate", json={"q": ["a", "b" * 21]})
        assert error(too_long, 400) == "'q[1]' has 21 characters; at most 20 per sentence (--max-chars)"
        big = c.post("/v1/translate", json={"q": ["x" * 500]})
        assert error(big, 413) == "the request body exceeds 400 bytes (--max-body-bytes)"

        def chunks():  # no Content-Length: the limit holds on the bytes as they stream in
            yield b'{"q": "'
            for _ in range(50):
                yield b"y" * 20
            yield b'"}'

        streamed = c.post("/v1/translate", content=chunks(), headers=_json())
        assert "exceeds 400 bytes" in error(streamed, 413)
        assert "between 1 and 4 (--max-beam)" in error(c.post("/v1/translate", json={"q": "a", "beam": 5}), 400)
        assert c.post("/v1/translate", json={"q": ["a cross"] * 3}).status_code == 200


def test_settings_are_checked() -> None:
    from ikd.errors import IkdError

    with pytest.raises(IkdError, match="--max-chars 0: must be at least 1"):
        Settings(Limits(max_chars=0)).check()
    with pytest.raises(IkdError, match=r"--beam 20: must be between 1 and --max-beam \(16\)"):
        Settings(beam=20).check()
    with pytest.raises(IkdError, match="--batch-window-ms -1"):
        Settings(window_ms=-1).check()


# ---------------------------------------------------------------------------------------------- /v1/imagine
def test_imagine_gives_the_analysis_data(client, ikd_served: ServedModel) -> None:
    from PIL import Image

    from ikd.probes.attention import pseudo_token_attention
    from ikd.probes.imagine import imagined_images
    from ikd.probes.sentences import batch_ids, source_pieces

    loaded = ikd_served.loaded
    pieces = source_pieces(loaded, SENTENCES[0])
    src = batch_ids(loaded, [pieces])
    r = client.post("/v1/imagine", json={"q": SENTENCES[0]})
    body = r.json()
    assert r.status_code == 200 and body["source"] == SENTENCES[0]
    assert body["pieces"] == [*pieces, "</s>"]
    att = body["attention"]
    want = pseudo_token_attention(loaded.model, src)
    heads, p, t = want.shape
    assert (att["heads"], att["pseudo_tokens"], att["grid"], att["layout"]) == (heads, p, [1, 1], "spatial")
    np.testing.assert_allclose(np.array(att["weights"]), want, atol=1e-5)
    assert t == len(body["pieces"])
    picture = imagined_images(loaded.model, loaded.distiller, src)[0]
    png = base64.b64decode(body["image"]["png_base64"])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), picture)
    assert (body["image"]["width"], body["image"]["height"]) == (picture.shape[1], picture.shape[0])
    raw = client.post("/v1/imagine", json={"q": SENTENCES[0], "format": "png"})
    assert raw.headers["content-type"] == "image/png" and raw.content == png
    tokens = "a small red circle is above a big blue square ."
    tokenized = client.post("/v1/imagine", json={"q": tokens, "input": "tokenized"})
    assert tokenized.json()["pieces"] == body["pieces"]


def test_imagine_errors(client, text_client) -> None:
    assert "model is text-only" in error(text_client.post("/v1/imagine", json={"q": "a cross"}), 422)
    assert "one sentence" in error(client.post("/v1/imagine", json={"q": ["a", "b"]}), 400)
    assert error(client.post("/v1/imagine", json={"q": "  "}), 400) == "'q' is empty"
    assert "'input': Input should be 'raw' or 'tokenized'" in error(
        client.post("/v1/imagine", json={"q": "a", "input": "bpe"}), 400
    )
    assert "unknown field 'path'" in error(client.post("/v1/imagine", json={"q": "a", "path": "/etc/passwd"}), 400)


def test_text_only_model(text_client, text_checkpoint: Path) -> None:
    want = reference(text_checkpoint, SENTENCES, 3, 2, max_len_b=TEXT_MAX_LEN)
    body = text_client.post("/v1/translate", json={"q": SENTENCES, "beam": 3, "nbest": 2}).json()
    assert [[h["text"] for h in t["nbest"]] for t in body["translations"]] == [[x for x, _ in w] for w in want]
    assert body["model"]["multimodal"] is False and "vision" not in body["model"]["recipe"]


# ---------------------------------------------------------------------------------------------- the rest
def test_page_health_metrics_and_unknown_paths(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="source"' in page.text and "default-src 'self'" in page.headers["content-security-policy"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and (health["source"], health["target"], health["pending"]) == ("en", "de", 0)
    assert "no such endpoint: /v2/translate" in error(client.post("/v2/translate", json={}), 404)
    assert error(client.get("/translate"), 405) == "GET /translate is not allowed (use POST)"
    client.post("/v1/translate", json={"q": ["a cross", "a square"]})
    client.post("/v1/translate", json={"q": "a", "beam": 99})
    client.get("/secret/../etc")
    text = client.get("/metrics").text
    assert _metric(text, 'ikd_requests_total{path="/v1/translate",status="200"}') == 1
    assert _metric(text, 'ikd_requests_total{path="/v1/translate",status="400"}') == 1
    assert _metric(text, 'ikd_requests_total{path="other",status="404"}') == 2  # /v2/... and /secret/...
    assert _metric(text, 'ikd_request_seconds_count{path="/v1/translate"}') == 2
    assert _metric(text, 'ikd_request_seconds_bucket{path="/v1/translate",le="+Inf"}') == 2
    assert _metric(text, "ikd_sentences_total") == 2 and _metric(text, "ikd_batch_sentences_count") == 1
    assert "# TYPE ikd_request_seconds histogram" in text


def _metric(text: str, name: str) -> float:
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, (name, text)
    return float(values[0])


def test_a_failing_search_is_a_500_and_the_server_goes_on(ikd_served: ServedModel, monkeypatch) -> None:
    calls = []

    def broken(key, sentences):
        calls.append(sentences)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return [[("ok", -1.0)] * key.beam for _ in sentences]

    monkeypatch.setattr(ikd_served, "translate", broken)
    with TestClient(create_app(ikd_served), raise_server_exceptions=False) as c:
        assert "internal error" in error(c.post("/v1/translate", json={"q": "a"}), 500)
        assert c.post("/v1/translate", json={"q": "a"}).json()["translations"][0]["text"] == "ok"


def test_concurrent_requests_share_one_search(ikd_served: ServedModel, toy_checkpoint: Path) -> None:
    expected = [nbest[0][0] for nbest in reference(toy_checkpoint, SENTENCES * 2)]
    answers: dict[int, str] = {}
    with TestClient(create_app(ikd_served, Settings(window_ms=400.0))) as c:
        barrier = threading.Barrier(len(expected))

        def ask(i: int) -> None:
            barrier.wait()
            answers[i] = c.post("/v1/translate", json={"q": (SENTENCES * 2)[i]}).json()["translations"][0]["text"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(expected))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        batches = _metric(c.get("/metrics").text, "ikd_batch_sentences_count")
    assert [answers[i] for i in range(len(expected))] == expected
    assert batches < len(expected)  # a 400 ms window gathers requests sent together


# ---------------------------------------------------------------------------------------------- the batcher
def test_batcher_groups_by_key_and_routes_results() -> None:
    seen: list[tuple[str, list[int]]] = []

    def run(key: str, items: list[int]) -> list[str]:
        seen.append((key, list(items)))
        if key == "bad":
            raise ValueError("no")
        return [f"{key}{x}" for x in items]

    batcher = Batcher(run, window_s=0.0, max_batch=100)
    a, b, c = batcher.submit("k", [1, 2]), batcher.submit("j", [3]), batcher.submit("k", [4])
    bad = batcher.submit("bad", [5])
    work = batcher.call(lambda: "done")
    assert batcher.pending == 6
    batcher.start()  # all five were queued before the worker looked: one collection
    assert (a.result(5), b.result(5), c.result(5), work.result(5)) == (["k1", "k2"], ["j3"], ["k4"], "done")
    with pytest.raises(ValueError, match="no"):
        bad.result(5)
    assert sorted(seen) == [("bad", [5]), ("j", [3]), ("k", [1, 2, 4])]
    assert batcher.pending == 0
    batcher.stop()
    with pytest.raises(ShuttingDown):
        batcher.submit("k", [1])


def test_batcher_window_size_cap_and_busy() -> None:
    sizes: list[int] = []
    release = threading.Event()

    def run(key, items):
        release.wait(5)
        return items

    batcher = Batcher(run, window_s=0.3, max_batch=3, max_pending=5, on_batch=sizes.append)
    batcher.start()
    first = batcher.submit("k", [1, 2])
    time.sleep(0.05)
    second = batcher.submit("k", [3, 4])  # arrives in the window; the batch is then full (4 >= 3)
    with pytest.raises(Busy, match="4 sentences are waiting"):
        batcher.submit("k", [5, 6])
    release.set()
    assert first.result(5) == [1, 2] and second.result(5) == [3, 4]
    assert sizes == [4]
    batcher.stop()


# ---------------------------------------------------------------------------------------------- the command
def test_serve_refuses_a_port_in_use(toy_checkpoint: Path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "-c", str(toy_checkpoint), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"127\.0\.0\.1:{port}: cannot listen there \(address already in use\)", err)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "70000"], "--port 70000: expected 0 to 65535"),
        (["--max-sentences", "0"], "--max-sentences 0: must be at least 1"),
        (["--amp", "fp8"], "--amp 'fp8'"),
        (["--beam", "40"], "--beam 40: must be between 1 and --max-beam (16)"),
    ],
)
def test_serve_option_errors(toy_checkpoint: Path, capsys, args: list[str], words: str) -> None:
    assert main(["serve", "-c", str(toy_checkpoint), *args]) == 1
    assert words in capsys.readouterr().err


def _post(host: str, port: int, path: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _listening_addresses(port: int) -> list[str]:
    """The local addresses of the listening TCP sockets on `port`, from Linux's /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
                found.append(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_listens_on_loopback_and_stops_cleanly(toy_checkpoint: Path, sig: signal.Signals) -> None:
    """`ikd serve` with the default --host listens on 127.0.0.1 only; SIGTERM (or Ctrl-C's SIGINT) lets the
    request in flight finish, then the command ends with status 0 and no traceback."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    args = ["serve", "-c", str(toy_checkpoint), "--port", "0", "--device", "cpu", "--batch-window-ms", "1000"]
    process = subprocess.Popen(
        [sys.executable, "-m", "ikd.cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not (found := re.search(r"at http://(\S+):(\d+)/ ", "".join(lines))):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        host, port = found.group(1), int(found.group(2))
        assert host == "127.0.0.1"
        assert _listening_addresses(port) in ([], ["127.0.0.1"])  # [] where /proc/net/tcp is not there
        assert _post(host, port, "/health")[0] == 200
        answer: list[tuple[int, dict]] = []
        asking = threading.Thread(target=lambda: answer.append(_post(host, port, "/v1/translate", {"q": "a cross"})))
        asking.start()
        while _post(host, port, "/health")[1]["pending"] == 0:  # in the 1 s batching window
            assert asking.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(sig)
        asking.join(60)
        assert process.wait(60) == 0
        reader.join(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    status, body = answer[0]
    assert status == 200 and body["translations"][0]["text"]
    err = "".join(lines)
    assert f"stopped ({sig.name})" in err and "Traceback" not in err


def _bench(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_serve_load_counts_requests_and_keeps_answers(ikd_served: ServedModel, toy_checkpoint: Path) -> None:
    """bench/serve_load.py's clients against a real uvicorn server: every request answered once, answers as
    the Translator's."""
    bench, server = _bench("serve_load"), _bench("serve_screenshots")
    with server.serving(ikd_served, Settings(window_ms=1.0)) as url:
        host, port = re.match(r"http://([\d.]+):(\d+)/", url).groups()
        run = bench.load(host, int(port), SENTENCES, clients=2, requests=5, max_seconds=60)
    assert (run["answered"], run["failed"], run["clients"]) == (5, 0, 2)
    expected = [nbest[0][0] for nbest in reference(toy_checkpoint, SENTENCES)]
    assert run["answers"] == dict(enumerate(expected))
    assert 0 < run["p50_ms"] <= run["p99_ms"] and run["sentences_per_s"] > 0
