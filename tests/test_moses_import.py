"""sacremoses imported with ranged character classes: same matches, same tokenisation, re left as it was."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from sacremoses import MosesTokenizer

from ikd.data.moses_import import import_sacremoses, ranged_classes

EVERY_CHARACTER = "".join(map(chr, range(0x110000)))


def _long(chars: str) -> str:
    return chars * (300 // len(chars) + 1)


def test_plain_classes_become_ranges() -> None:
    assert ranged_classes("[" + _long("gfedcba") + "xzy]+") == "[a-gx-z]+"
    assert ranged_classes(r"(\[[^\s\." + _long("0123456789") + r"])") == r"(\[[^\s.0-9])"
    assert ranged_classes("[" + _long("ab") + "][" + _long("yz") + "]") == "[ab][yz]"


def test_characters_special_in_a_class_stay_escaped() -> None:
    body = r"\]\^\\\-&~|" + _long("az")
    ranged = ranged_classes("[" + body + "]")
    assert ranged == r"[\&\-\\-\^az\|\~]"  # runs: & - \..^ a z | ~
    sample = "]^\\-&~|azb-"
    assert re.findall(ranged, sample) == re.findall("[" + body + "]", sample)


@pytest.mark.parametrize(
    "pattern",
    [
        "[a-z" + _long("0123") + "]",  # a range
        "[" + _long("ab") + r"\x41]",  # an escape that is not punctuation
        "[[" + _long("ab") + "]",  # a nested bracket
        "[abc]",  # short
    ],
)
def test_other_classes_are_left_verbatim(pattern: str) -> None:
    assert ranged_classes(pattern) == pattern


@pytest.mark.parametrize(
    "template",
    ["[{IsAlnum}]", r"[^{IsAlnum}\s\.'\`\,\-]", r"[;:@#\$%&{IsSc}{IsSo}]", "[^{IsN}]", "[{IsAlpha}{IsLower}]"],
)
def test_sacremoses_categories_match_the_same_characters(template: str) -> None:
    # The class strings as sacremoses builds them; findall over every code point compares the two classes.
    categories = ("IsAlnum", "IsSc", "IsSo", "IsN", "IsAlpha", "IsLower")
    pattern = template.format(**{name: getattr(MosesTokenizer, name) for name in categories})
    ranged = ranged_classes(pattern)
    assert len(ranged) < len(pattern) / 2
    assert re.findall(ranged, EVERY_CHARACTER) == re.findall(pattern, EVERY_CHARACTER)


def test_case_insensitive_patterns_are_compiled_as_written() -> None:
    from ikd.data.moses_import import _compile_with_ranged_classes

    long = "[" + _long("ab") + "]"
    with _compile_with_ranged_classes():
        assert re.compile(long).pattern == "[ab]"
        assert re.compile(long, re.IGNORECASE).pattern == long
        assert re.compile("(?i)" + long).pattern == "(?i)" + long


def test_re_compile_is_restored() -> None:
    plain = re.compile
    module = import_sacremoses()
    assert re.compile is plain
    assert module.MosesTokenizer is MosesTokenizer


SENTENCES = [
    "A man in a red shirt rides a horse, at 3,000 m — near São Paulo!",
    "Zwei Männer (einer trägt 'ne Mütze) spielen Fußball... „Toll“, sagt er.",
    "L'homme au chapeau « noir » coûte 12,50 € ; n'est-ce pas ?",
    "Price: $5.99 / £4 / ¥600 © 2020 ® ™ §3 ° 50% @home #tag",
    "Ελληνικά κείμενα, русский текст, 中文字符, עברית and हिन्दी।",
    "well-known e-mail addresses can't end with 'll or n't.",
]


TOKENISE = """
import json, sys
rows = json.loads(sys.stdin.read())
if sys.argv[1] == "ikd":
    from ikd.data.text import MosesPunctNormalizer, MosesTokenizer
else:
    from sacremoses import MosesPunctNormalizer, MosesTokenizer
out = [MosesTokenizer.PAD_NOT_ISALNUM[0].pattern]
for lang, text in rows:
    norm = MosesPunctNormalizer(lang=lang, perl_parity=True).normalize(text.lower() + "\\n")
    tok = MosesTokenizer(lang=lang)
    out.append([tok.tokenize(norm, escape=True, return_str=True),
                tok.tokenize(text, aggressive_dash_splits=True, return_str=True)])
print(json.dumps(out))
"""


def _tokenised(importer: str, rows: list[list[str]]) -> list:
    done = subprocess.run(
        [sys.executable, "-c", TOKENISE, importer], input=json.dumps(rows), capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_tokenisation_equals_a_plain_import() -> None:
    # Each side in a fresh interpreter, so that ikd's import is the first import of sacremoses.
    rows = [[lang, text] for text in SENTENCES for lang in ("en", "de", "fr")]
    ranged, *ikd_lines = _tokenised("ikd", rows)
    plain, *plain_lines = _tokenised("plain", rows)
    assert len(ranged) < len(plain) / 2  # the ranged classes were in use
    assert ikd_lines == plain_lines
