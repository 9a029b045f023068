"""Screenshots of `ikd serve`'s web page in headless Chromium, at a laptop's and a phone's viewport.

    python bench/serve_screenshots.py --checkpoint RUN/checkpoint_average.pt --sentence "A dog runs on the beach."
    python bench/serve_screenshots.py --toy-dir /tmp/ikd-toy     # the toy checkpoint of bench/serve_load.py

writes docs/serve-page-laptop.png (the 1280x800 screen) and docs/serve-page-phone.png (the whole page in a
phone's 390x844 "mobile" viewport, 390 px wide), each once every typed sentence is translated and, for an IKD
model, shows its imagined image and pseudo-token attention; the PNGs are reduced to a 256-colour palette to
stay small.

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`; or CHROMIUM and CHROMEDRIVER
naming them) and selenium (in ikd's test extra). The helpers here (a server on a thread, a browser at a given
viewport, typing and waiting for the page) also drive tests/test_serve_page.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VIEWPORTS = {"laptop": (1280, 800, False), "phone": (390, 844, True)}
TOY_SENTENCES = ["A small red circle is above a big blue square.", "Two green triangles are left of a yellow cross."]


def browser_paths() -> tuple[str, str] | str:
    """(chromium, chromedriver), or why they cannot be used."""
    browser = os.environ.get("CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    browser, driver = (p if p and os.access(p, os.X_OK) else None for p in (browser, driver))
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None)
        return f"{missing} not found (Debian: apt-get install chromium chromium-driver; or set CHROMIUM/CHROMEDRIVER)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium, or ikd's test extra)"
    return browser, driver


@contextlib.contextmanager
def serving(served: Any, settings: Any = None, timeout: float = 30.0) -> Iterator[str]:
    """`ikd serve`'s app for a loaded ServedModel under uvicorn on a thread, on a free 127.0.0.1 port; yields
    its URL, and always stops it (uvicorn's graceful shutdown, then the batcher)."""
    import uvicorn

    from ikd.commands.serve import bind, url_of
    from ikd.serve.app import create_app

    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(
        create_app(served, settings), log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)  # not the main thread: uvicorn leaves the signal handlers alone
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ikd-serve-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


@contextlib.contextmanager
def chromium(timeout: float = 30.0) -> Iterator[Any]:
    """A headless Chromium under selenium, page loads and scripts limited to `timeout` seconds; always quit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = browser_paths()
    if isinstance(found, str):
        raise RuntimeError(found)
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--no-first-run", "--disable-extensions", "--force-device-scale-factor=1", "--lang=en-US",
                "--window-size=1280,800"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        driver.set_page_load_timeout(timeout)
        driver.set_script_timeout(timeout)
        yield driver
    finally:
        driver.quit()


def set_viewport(driver: Any, name: str) -> tuple[int, int]:
    """Emulate VIEWPORTS[name] (CSS pixels, device pixel ratio 1); returns (width, height)."""
    width, height, mobile = VIEWPORTS[name]
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    settle(driver)
    return width, height


def settle(driver: Any) -> None:
    """Wait for two animation frames: layout and paint have caught up."""
    driver.execute_async_script("const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done));")


def translate_on_page(driver: Any, url: str, text: str, imagined: bool, timeout: float = 60.0) -> list[Any]:
    """Open the page, type `text` (one sentence a line) into it and wait until every card is translated and,
    with `imagined`, shows its image and attention; returns the cards. A card in error fails at once."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1)
    wait.until(lambda d: "→" in d.find_element(By.ID, "pair").text)
    box = driver.find_element(By.ID, "source")
    box.clear()
    box.send_keys(text)
    lines = [line for line in text.split("\n") if line.strip()]

    def ready(d: Any) -> list[Any] | bool:
        cards = d.find_elements(By.CSS_SELECTOR, "#results .result")
        states = [c.get_attribute("data-state") for c in cards]
        if "error" in states:
            bad = cards[states.index("error")]
            raise AssertionError(f"the page shows an error: {bad.find_element(By.CLASS_NAME, 'translation').text}")
        if len(cards) != len(lines) or any(s != "done" for s in states):
            return False
        if imagined:
            for card in cards:
                failed = [m.text for m in card.find_elements(By.CLASS_NAME, "meta") if m.text.startswith("imagine:")]
                if failed:
                    raise AssertionError(f"the page shows an error: {failed[0]}")
            if any(c.get_attribute("data-imagined") != "done" for c in cards):
                return False
        return cards

    cards = wait.until(ready)
    settle(driver)
    return cards


def save_full_page(driver: Any, path: Path) -> tuple[int, int]:
    """A screenshot of the whole page at the current viewport's width (to its end, past the screen's height)."""
    import base64

    width, height = driver.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, Math.max(e.scrollHeight, window.innerHeight)];"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    options = {"format": "png", "captureBeyondViewport": True, "clip": clip}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", options)
    path.write_bytes(base64.b64decode(shot["data"]))
    return width, height


def small_png(path: Path) -> int:
    """Re-save a screenshot with a 256-colour palette (flat UI colours survive it); returns its size."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    tmp = path.with_suffix(".tmp.png")
    palette.save(tmp, optimize=True)
    os.replace(tmp, path)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="Model to show (default: the toy one of serve_load.py).")
    parser.add_argument("--sentence", action="append", help="A sentence to type (repeatable).")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="Folder for serve-page-*.png.")
    parser.add_argument("--toy-dir", type=Path, default=Path("/tmp/ikd-serve-toy"), help="Toy data and run.")
    parser.add_argument("--toy-updates", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds to wait for the page.")
    args = parser.parse_args(argv)
    found = browser_paths()
    if isinstance(found, str):
        raise SystemExit(found)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))
    from ikd.serve.model import ServedModel

    checkpoint = args.checkpoint
    if checkpoint is None:
        sys.path.insert(0, str(Path(__file__).parent))
        from serve_load import toy_checkpoint

        checkpoint = toy_checkpoint(args.toy_dir, args.toy_updates)
    sentences = args.sentence or TOY_SENTENCES
    served = ServedModel.load([checkpoint], "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    with serving(served) as url, chromium(args.timeout) as driver:
        for name in VIEWPORTS:
            set_viewport(driver, name)
            translate_on_page(driver, url, "\n".join(sentences), served.multimodal, args.timeout)
            path = args.out / f"serve-page-{name}.png"
            if VIEWPORTS[name][2]:  # a phone: the whole page, which scrolls past the first screen
                save_full_page(driver, path)
            else:
                driver.save_screenshot(str(path))
            print(f"{path}: {small_png(path) // 1024} KiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
