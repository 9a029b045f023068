"""`ikd prepare multi30k`: layout, manifest, images (small JPEGs written here), bad input, idempotence."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ikd.cli import main
from ikd.data.images import resize_crop
from ikd.fileio import sha256_file

SIZES = {"train": 6, "val": 3, "test_2016_flickr": 2, "test_2017_flickr": 2, "test_2017_mscoco": 2}
WITH_IMAGES = ("train", "val", "test_2017_mscoco")
S = 16


def colour(split: str, i: int) -> tuple[int, int, int]:
    return (30 + 40 * list(SIZES).index(split), 40 + 30 * i, 200 - 20 * i)


def image_name(split: str, i: int) -> str:
    return f"COCO_{i:04d}.jpg" if split == "test_2017_mscoco" else f"{split}_{i}.jpg"


def make_task1(root: Path, images: Path | None = None, langs=("en", "de", "fr")) -> Path:
    """A miniature multi30k/dataset data/task1 folder (tok/, image_splits/) and optionally JPEGs."""
    (root / "tok").mkdir(parents=True)
    (root / "image_splits").mkdir()
    for split, n in SIZES.items():
        for lang in langs:
            lines = [f"{lang} sentence {i} of {split} ." for i in range(n)]
            (root / "tok" / f"{split}.lc.norm.tok.{lang}").write_text("".join(x + "\n" for x in lines))
        listed = [image_name(split, i) + (f"#{100 + i}" if "mscoco" in split else "") for i in range(n)]
        (root / "image_splits" / f"{split}.txt").write_text("".join(x + "\n" for x in listed))
        if images is not None and split in WITH_IMAGES:
            images.mkdir(exist_ok=True)
            for i in range(n):
                size = (40, 30) if i % 2 else (30, 44)
                Image.new("RGB", size, colour(split, i)).save(images / image_name(split, i), quality=95)
    return root


def prepare(src: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "multi30k", "--source", str(src), "--out", str(out), "--workers", "1", *extra])


def assert_nothing_written(out: Path) -> None:
    files = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert files == []


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_shared_multi30k_line_counts(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert main(["prepare", "multi30k", "--source", str(shared_data / "multi30k"), "--out", str(out)]) == 0
    m = manifest(out)
    assert {s: e["lines"] for s, e in m["splits"].items()} == {
        "train": 29000,
        "val": 1014,
        "test_2016_flickr": 1000,
        "test_2017_flickr": 1000,
        "test_2017_mscoco": 461,
    }
    assert m["kind"] == "multi30k" and m["image_size"] is None
    for entry in m["splits"].values():
        assert entry["images"] is None and entry["dropped_lines"] == []
        for lang in ("en", "de", "fr"):
            info = entry["langs"][lang]
            assert info["sha256"] == info["source_sha256"] == sha256_file(out / info["path"])
    # a re-run rewrites nothing (identical manifest, untouched text files)
    before = (out / "manifest.json").read_bytes(), (out / "text" / "train.en").stat().st_mtime_ns
    assert main(["prepare", "multi30k", "--source", str(shared_data / "multi30k"), "--out", str(out)]) == 0
    assert ((out / "manifest.json").read_bytes(), (out / "text" / "train.en").stat().st_mtime_ns) == before


def test_resize_and_centre_crop_match_torchvision() -> None:
    from torchvision import transforms

    rng = np.random.default_rng(0)
    for w, h in ((40, 23), (23, 41), (30, 30)):
        pil = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ref = transforms.Compose([transforms.Resize(round(14 * 256 / 224)), transforms.CenterCrop(14)])(pil)
        assert np.array_equal(resize_crop(pil, 14), np.asarray(ref).transpose(2, 0, 1))
    assert resize_crop(Image.new("L", (20, 30), 7), 14).shape == (3, 14, 14)


def test_images_are_decoded_aligned_and_named(tmp_path: Path) -> None:
    src = make_task1(tmp_path / "task1", images=tmp_path / "jpg")
    out = tmp_path / "data"
    assert prepare(src, out, "--images", str(tmp_path / "jpg"), "--image-size", str(S)) == 0
    m = manifest(out)
    assert m["image_size"] == S
    for split in SIZES:
        entry = m["splits"][split]
        if split not in WITH_IMAGES:
            assert entry["images"] is None and "none of the" in entry["images_note"]
            assert not (out / "images" / f"{split}.npy").exists()
            continue
        arr = np.load(out / entry["images"]["path"], mmap_mode="r")
        assert arr.shape == (SIZES[split], 3, S, S) and arr.dtype == np.uint8
        names = (out / entry["images"]["names"]).read_text().splitlines()
        assert names == [image_name(split, i) for i in range(SIZES[split])]  # MSCOCO "#id" stripped
        for i in range(SIZES[split]):
            assert np.abs(arr[i].reshape(3, -1).mean(1) - colour(split, i)).max() < 4
        assert entry["images"]["sha256"] == sha256_file(out / entry["images"]["path"])


def test_parallel_decoding_gives_the_same_arrays(tmp_path: Path) -> None:
    src = make_task1(tmp_path / "task1", images=tmp_path / "jpg")
    one, two = tmp_path / "one", tmp_path / "two"
    assert prepare(src, one, "--images", str(tmp_path / "jpg"), "--image-size", str(S)) == 0
    code = main(["prepare", "multi30k", "--source", str(src), "--out", str(two), "--images", str(tmp_path / "jpg"),
                 "--image-size", str(S), "--workers", "2"])  # fmt: skip
    assert code == 0
    assert sha256_file(one / "images" / "train.npy") == sha256_file(two / "images" / "train.npy")


def test_rerun_skips_decoding_and_notices_changed_images(tmp_path: Path, capsys) -> None:
    src = make_task1(tmp_path / "task1", images=tmp_path / "jpg")
    out = tmp_path / "data"
    args = ("--images", str(tmp_path / "jpg"), "--image-size", str(S))
    assert prepare(src, out, *args) == 0
    first = (out / "manifest.json").read_bytes()
    npy_mtime = (out / "images" / "train.npy").stat().st_mtime_ns
    capsys.readouterr()
    assert prepare(src, out, *args) == 0
    assert "train: images unchanged" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == first
    assert (out / "images" / "train.npy").stat().st_mtime_ns == npy_mtime
    # a text-only re-run keeps the decoded images
    assert prepare(src, out) == 0
    assert manifest(out)["splits"]["train"]["images"]["count"] == 6 and manifest(out)["image_size"] == S
    # a changed image is decoded again
    Image.new("RGB", (30, 30), (1, 2, 3)).save(tmp_path / "jpg" / "train_0.jpg")
    assert prepare(src, out, *args) == 0
    assert np.load(out / "images" / "train.npy")[0].reshape(3, -1).mean(1).max() < 8


def _damage(jpg: Path) -> None:
    (jpg / "train_1.jpg").unlink()  # missing
    (jpg / "train_3.jpg").write_bytes(b"this is not a JPEG at all")  # corrupt
    data = (jpg / "val_2.jpg").read_bytes()
    (jpg / "val_2.jpg").write_bytes(data[: len(data) // 2])  # truncated


def test_missing_corrupt_and_truncated_images_are_listed(tmp_path: Path, capsys) -> None:
    src = make_task1(tmp_path / "task1", images=tmp_path / "jpg")
    _damage(tmp_path / "jpg")
    out = tmp_path / "data"
    assert prepare(src, out, "--images", str(tmp_path / "jpg"), "--image-size", str(S)) == 1
    err = capsys.readouterr().err
    assert "line 2: train_1.jpg: missing" in err and "image_splits/train.txt" in err
    assert_nothing_written(out)
    (tmp_path / "jpg" / "train_1.jpg").write_bytes((tmp_path / "jpg" / "train_0.jpg").read_bytes())
    assert prepare(src, out, "--images", str(tmp_path / "jpg"), "--image-size", str(S)) == 1
    err = capsys.readouterr().err
    assert "line 4: train_3.jpg: unreadable" in err
    assert_nothing_written(out)
    (tmp_path / "jpg" / "train_3.jpg").write_bytes((tmp_path / "jpg" / "train_0.jpg").read_bytes())
    assert prepare(src, out, "--images", str(tmp_path / "jpg"), "--image-size", str(S)) == 1
    err = capsys.readouterr().err
    assert "line 3: val_2.jpg: truncated" in err
    assert_nothing_written(out)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_skip_missing_images_keeps_every_line_of_a_test_split(tmp_path: Path, damage: str) -> None:
    """A test split is scored against all its references: with --skip-missing-images a test split whose
    images are incomplete keeps every line and gets no images (the manifest says why)."""
    src = make_task1(tmp_path / "task1", images=tmp_path / "jpg")
    coco = tmp_path / "jpg" / image_name("test_2017_mscoco", 1)
    coco.unlink() if damage == "missing" else coco.write_bytes(b"not a JPEG")
    out = tmp_path / "data"
    assert prepare(src, out, "--images", str(tmp_path / "jpg"), "--image-size", str(S), "--skip-missing-images") == 0
    m = manifest(out)
    entry = m["splits"]["test_2017_mscoco"]
    assert entry["lines"] == 2 and entry["dropped_lines"] == [] and entry["images"] is None
    assert "1 of 2 images missing or unreadable" in entry["images_note"] and m["skip_missing_images"] is True
    assert not (out / "images" / "test_2017_mscoco.npy").exists()
    assert m["splits"]["train"]["images"]["count"] == 6  # training splits are whole: nothing to drop there


def test_skip_missing_images_drops_lines_everywhere(tmp_path: Path) -> None:
    src = make_task1(tmp_path / "task1", images=tmp_path / "jpg")
    _damage(tmp_path / "jpg")
    out = tmp_path / "data"
    assert prepare(src, out, "--images", str(tmp_path / "jpg"), "--image-size", str(S), "--skip-missing-images") == 0
    m = manifest(out)
    train, val = m["splits"]["train"], m["splits"]["val"]
    assert train["dropped_lines"] == [[2, "train_1.jpg"], [4, "train_3.jpg"]]
    assert val["dropped_lines"] == [[3, "val_2.jpg"]]
    assert train["lines"] == 4 and train["images"]["count"] == 4 and val["lines"] == 2
    kept = [0, 2, 4, 5]
    for lang in ("en", "de", "fr"):
        assert (out / "text" / f"train.{lang}").read_text().splitlines() == [
            f"{lang} sentence {i} of train ." for i in kept
        ]
    arr = np.load(out / "images" / "train.npy")
    assert arr.shape[0] == 4
    for row, i in enumerate(kept):
        assert np.abs(arr[row].reshape(3, -1).mean(1) - colour("train", i)).max() < 4
    assert (out / "images" / "train.names").read_text().splitlines() == [f"train_{i}.jpg" for i in kept]


def test_a_failed_rerun_leaves_the_previous_folder_intact(tmp_path: Path) -> None:
    src = make_task1(tmp_path / "task1", images=tmp_path / "jpg")
    out = tmp_path / "data"
    assert prepare(src, out, "--images", str(tmp_path / "jpg"), "--image-size", str(S)) == 0
    before = {p: sha256_file(p) for p in out.rglob("*") if p.is_file()}
    (tmp_path / "jpg" / "val_0.jpg").write_bytes(b"broken")
    assert prepare(src, out, "--images", str(tmp_path / "jpg"), "--image-size", str(S)) == 1
    assert {p: sha256_file(p) for p in out.rglob("*") if p.is_file()} == before


def test_raw_files_are_tokenised_when_tok_is_absent(tmp_path: Path) -> None:
    src = make_task1(tmp_path / "task1")
    shutil.rmtree(src / "tok")
    (src / "raw").mkdir()
    for split, n in SIZES.items():
        for lang in ("en", "de", "fr"):
            with gzip.open(src / "raw" / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("".join(f"The {lang}'s Sentence {i}.\n" for i in range(n)))
    out = tmp_path / "data"
    assert prepare(src, out) == 0
    assert (out / "text" / "val.en").read_text().splitlines()[1] == "the en &apos;s sentence 1 ."
    assert manifest(out)["splits"]["val"]["langs"]["fr"]["source"] == "raw/val.fr.gz"


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda r: shutil.rmtree(r / "tok"), "not a Multi30K task-1 folder"),
        (lambda r: (r / "tok" / "val.lc.norm.tok.de").unlink(), "val.lc.norm.tok.de: not found"),
        (lambda r: [p.unlink() for p in (r / "tok").glob("test_2017_flickr.*")], "test_2017_flickr.lc.norm.tok.en"),
        (lambda r: (r / "tok" / "train.lc.norm.tok.fr").write_text("a\nb\n"), "train.lc.norm.tok.fr: 2 lines, but"),
        (lambda r: (r / "image_splits" / "val.txt").write_text("x.jpg\n"), "val.txt: 1 lines, but"),
        (lambda r: (r / "image_splits" / "val.txt").unlink(), "val.txt: image list of split val not found"),
        (lambda r: (r / "tok" / "val.lc.norm.tok.en").write_text("a\n\nc\n"), "val.lc.norm.tok.en:2: empty line"),
        (lambda r: (r / "tok" / "train.lc.norm.tok.de").write_bytes(b"ok\nok\n\xff\n"), "tok.de:3: not valid UTF-8"),
    ],
    ids=["wrong-folder", "missing-language", "missing-split", "text-vs-text", "text-vs-images", "no-image-list",
         "empty-line", "non-utf8"],
)  # fmt: skip
def test_bad_input_is_a_clear_error(tmp_path: Path, capsys, damage, expected: str) -> None:
    src = make_task1(tmp_path / "task1")
    damage(src)
    out = tmp_path / "data"
    assert prepare(src, out) == 1
    err = capsys.readouterr().err
    assert expected in " ".join(err.split()), err
    assert_nothing_written(out)


def test_bad_options(tmp_path: Path, capsys) -> None:
    src = make_task1(tmp_path / "task1")
    out = tmp_path / "data"
    assert prepare(tmp_path / "nowhere", out) == 1
    assert "no such folder" in capsys.readouterr().err
    assert prepare(src, out, "--images", str(tmp_path / "nowhere")) == 1
    assert "--images" in capsys.readouterr().err
    assert prepare(src, out, "--pairs", "en-xx") == 1
    assert "unknown language 'xx'" in capsys.readouterr().err
    assert prepare(src, out, "--image-size", "3") == 1
    assert_nothing_written(out)


def test_a_wrong_images_folder_is_an_error_and_keeps_earlier_images(tmp_path: Path, capsys) -> None:
    """--images pointing at a folder without the training pictures (a typo, the wrong folder) is an error,
    not a data folder without images; the images an earlier run decoded stay."""
    src = make_task1(tmp_path / "task1", images=tmp_path / "jpg")
    out = tmp_path / "data"
    assert prepare(src, out, "--images", str(tmp_path / "jpg"), "--image-size", str(S)) == 0
    before = sha256_file(out / "images" / "train.npy")
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert prepare(src, out, "--images", str(tmp_path / "empty"), "--image-size", str(S)) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "none of the 6 images of split 'train' is there (the first is train_0.jpg" in err
    assert sha256_file(out / "images" / "train.npy") == before and manifest(out)["splits"]["train"]["images"]


def test_en_cs_alone_skips_the_splits_without_czech(tmp_path: Path) -> None:
    """Czech has train, val and test_2016_flickr only: --pairs en-cs prepares those three splits."""
    src = make_task1(tmp_path / "task1", langs=("en", "cs"))
    for split in ("test_2017_flickr", "test_2017_mscoco"):
        (src / "tok" / f"{split}.lc.norm.tok.cs").unlink()
    out = tmp_path / "data"
    assert prepare(src, out, "--pairs", "en-cs") == 0
    assert sorted(manifest(out)["splits"]) == ["test_2016_flickr", "train", "val"]
    assert (out / "text" / "val.cs").read_text().splitlines()[0] == "cs sentence 0 of val ."
    assert main(["bpe", "--data", str(out), "--pair", "en-cs", "--merges", "20"]) == 0
    assert (out / "en-cs" / "test_2016_flickr.bpe.cs").is_file()


def test_offline_download_is_a_clear_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "data"
    assert main(["prepare", "multi30k", "--source", "http://127.0.0.1:9/task1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "cannot download http://127.0.0.1:9/task1/tok/train.lc.norm.tok.en" in " ".join(err.split())
    assert "--source" in err
    assert not (out / "manifest.json").exists()


def test_download_from_a_url(tmp_path: Path) -> None:
    """The URL path, against a local HTTP server standing in for raw.githubusercontent.com."""
    import functools
    import http.server
    import threading

    src = make_task1(tmp_path / "task1")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(src))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = tmp_path / "data"
        assert main(["prepare", "multi30k", "--source", url, "--out", str(out)]) == 0
        m = manifest(out)
        assert m["source"] == url and m["splits"]["val"]["lines"] == 3
        assert (out / "text" / "val.de").read_text() == (src / "tok" / "val.lc.norm.tok.de").read_text()
        # another source into the same folder is fetched from there, not served from the first one's cache
        assert main(["prepare", "multi30k", "--source", url + "/nothing", "--out", str(out)]) == 1
        assert manifest(out)["source"] == url
    finally:
        server.shutdown()
        server.server_close()


def test_failure_list_names_the_first_twenty_and_counts_the_rest() -> None:
    from ikd.data.images import format_failures, strip_name

    message = format_failures("imgs", [(i, f"{i}.jpg", "missing") for i in range(1, 26)])
    assert "25 image(s)" in message and "line 20: 20.jpg: missing" in message
    assert "21.jpg" not in message and "... and 5 more" in message
    assert strip_name("COCO_val2014_000000398076.jpg#657409") == "COCO_val2014_000000398076.jpg"
