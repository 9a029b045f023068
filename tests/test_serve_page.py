"""`ikd serve`'s web page in a real headless Chromium (selenium): a uvicorn server on a free loopback port with
the toy IKD checkpoint and a text-only model, a sentence typed into the page, its translation and n-best
against the Translator's (what `ikd translate` prints), and for the IKD model the imagined image (pixel for
pixel) and the attention heatmap; screenshots at a laptop's and a phone's width in the test's tmp folder, where
the page must not overflow sideways. Skipped when Chromium, its driver or selenium is missing."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
from fixtures_train import text_only_copy

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'ikd[serve]'")
pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ikd[serve]'")
pytest.importorskip("selenium", reason="needs selenium (ikd's test extra) to drive Chromium")

from ikd.inference.translator import Translator  # noqa: E402
from ikd.serve.app import Settings  # noqa: E402
from ikd.serve.model import ServedModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_serve_screenshots", REPO / "bench" / "serve_screenshots.py")
page = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(page)

_found = page.browser_paths()
pytestmark = pytest.mark.skipif(isinstance(_found, str), reason=f"the page test needs a browser: {_found}")

SENTENCES = ["A small red circle is above a big blue square.", "a big green cross ."]
TEXT_MAX_LEN = 6  # the text-only model is untrained: keep its outputs short
TIMEOUT = 60.0
ACCENT = (24, 74, 190)  # the heatmap's colour for the strongest weight (page.html's colour(1))


@pytest.fixture(scope="module")
def text_checkpoint(toy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return text_only_copy(toy_checkpoint, tmp_path_factory.mktemp("page_text") / "text.pt")


@pytest.fixture(scope="module")
def browser():
    with page.chromium(TIMEOUT) as driver:
        yield driver


def expected_nbest(checkpoint: Path, **options) -> list[list[tuple[str, float]]]:
    """The page's default search (beam 5, 3 best): what `ikd translate --nbest 3` gives."""
    return Translator.from_checkpoint(checkpoint, "cpu", 5, **options).translate_nbest(SENTENCES, 3)


def check_cards(driver, cards: list, want: list[list[tuple[str, float]]]) -> None:
    """Each card: its source, the best translation, the 3 best with their scores as the page rounds them."""
    for card, sentence, nbest in zip(cards, SENTENCES, want):
        shown = driver.execute_script(
            "const c = arguments[0];"
            "return {source: c.querySelector('.source').textContent,"
            "        best: c.querySelector('.translation').textContent,"
            "        nbest: [...c.querySelectorAll('ol.nbest li')].map((li) =>"
            "          [li.firstChild.textContent, li.querySelector('.score').textContent]),"
            "        meta: c.querySelector('.meta').textContent};",
            card,
        )
        assert shown["source"] == sentence
        assert shown["best"] == nbest[0][0]
        assert [text for text, _ in shown["nbest"]] == [text for text, _ in nbest]
        for (_, score), (_, want_score) in zip(shown["nbest"], nbest):
            assert float(score) == pytest.approx(want_score, abs=6e-4)  # toFixed(3)
        assert shown["meta"].startswith(f"beam 5 · score {shown['nbest'][0][1]} · ")


def screenshots(driver, out: Path, name: str) -> dict[str, Path]:
    """Screenshots at both viewports (the page re-laid out in place); none may scroll sideways."""
    paths = {}
    for viewport in page.VIEWPORTS:
        width, height = page.set_viewport(driver, viewport)
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth;")
        assert overflow <= 0, f"{viewport}: the page is {overflow} px wider than the screen"
        paths[viewport] = out / f"{name}-{viewport}.png"
        driver.save_screenshot(str(paths[viewport]))
        assert png_size(paths[viewport]) == (width, height)
    page.set_viewport(driver, "laptop")
    return paths


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_page_with_the_ikd_model(browser, toy_checkpoint: Path, tmp_path: Path) -> None:
    from ikd.probes.imagine import imagined_images
    from ikd.probes.sentences import batch_ids, source_pieces

    served = ServedModel.load([toy_checkpoint], "cpu")
    want = expected_nbest(toy_checkpoint)
    with page.serving(served, Settings(window_ms=1.0)) as url:
        assert url.startswith("http://127.0.0.1:")
        cards = page.translate_on_page(browser, url, "\n".join(SENTENCES), imagined=True, timeout=TIMEOUT)
        check_cards(browser, cards, want)
        assert "IKD" in browser.find_element("id", "model").text
        loaded = served.loaded
        for card, sentence in zip(cards, SENTENCES):
            pieces = source_pieces(loaded, sentence)
            picture = imagined_images(loaded.model, loaded.distiller, batch_ids(loaded, [pieces]))[0]
            drawn = browser.execute_script(
                "const img = arguments[0].querySelector('.imagined img');"
                "if (!img.complete || !img.naturalWidth) return null;"
                "const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;"
                "const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);"
                "return [c.width, c.height, Array.from(ctx.getImageData(0, 0, c.width, c.height).data)];",
                card,
            )
            assert drawn is not None, "the imagined image did not load"
            w, h, rgba = drawn
            assert (h, w) == picture.shape[:2]
            assert np.array_equal(np.array(rgba, dtype=np.uint8).reshape(h, w, 4)[..., :3], picture)
            heat = browser.execute_script(
                "const c = arguments[0].querySelector('canvas.heat');"
                "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                "const seen = new Set();"
                "for (let i = 0; i < d.length; i += 4) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);"
                "const caption = c.closest('figure').querySelector('figcaption').textContent;"
                "return [parseFloat(c.style.height), c.clientWidth, [...seen], caption];",
                card,
            )
            height, width, colours, caption = heat
            assert height == 15 * (len(pieces) + 1) + 4  # a row per source piece and EOS
            assert width > 0 and ",".join(map(str, ACCENT)) in colours  # the strongest weight is drawn
            heads, p = loaded.recipe.model.heads, served.member.num_pseudo_tokens
            tokens = "1 pseudo-token" if p == 1 else f"{p} pseudo-tokens"
            assert caption == f"attention: {tokens} × {heads} heads"
        shots = screenshots(browser, tmp_path, "ikd")
    assert all(path.stat().st_size > 1000 for path in shots.values())


def test_page_with_a_text_only_model(browser, text_checkpoint: Path, tmp_path: Path) -> None:
    served = ServedModel.load([text_checkpoint], "cpu", max_len_b=TEXT_MAX_LEN)
    want = expected_nbest(text_checkpoint, max_len_b=TEXT_MAX_LEN)
    with page.serving(served, Settings(window_ms=1.0)) as url:
        cards = page.translate_on_page(browser, url, "\n".join(SENTENCES), imagined=False, timeout=TIMEOUT)
        check_cards(browser, cards, want)
        assert "text-only" in browser.find_element("id", "model").text
        assert not browser.find_elements("css selector", ".visual, .imagined, canvas.heat")
        assert all("text-only" in card.get_attribute("class") for card in cards)
        screenshots(browser, tmp_path, "text")


def test_the_page_reports_a_bad_request(browser, toy_checkpoint: Path) -> None:
    """The server's one-line error (here: a sentence over --max-chars) is shown on the card."""
    from ikd.serve.app import Limits

    served = ServedModel.load([toy_checkpoint], "cpu")
    with page.serving(served, Settings(Limits(max_chars=20), window_ms=1.0)) as url:
        with pytest.raises(AssertionError, match=r"has 46 characters; at most 20 per sentence \(--max-chars\)"):
            page.translate_on_page(browser, url, SENTENCES[0], imagined=True, timeout=TIMEOUT)
