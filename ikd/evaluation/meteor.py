"""METEOR: the official METEOR 1.5 jar when Java, the jar and the language's paraphrase table are at hand
(`java -Xmx2G -jar meteor-1.5.jar HYP REF -l LANG -norm -q`, as the authors ran it); otherwise a fallback
whose label says so in every output: the jar with `-m "exact stem"` when only the paraphrase table is
missing, or NLTK's meteor_score with the language's Snowball stemmer and no synonyms (no WordNet download).

Scores are reported on the paper's 0-100 scale.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ikd.errors import IkdError

JAR_ENV = "IKD_METEOR_JAR"
OFFICIAL = "METEOR 1.5"
# METEOR 1.5's language codes (Czech is "cz") and NLTK's Snowball stemmer names.
JAR_LANG = {"en": "en", "de": "de", "fr": "fr", "cs": "cz", "cz": "cz", "es": "es", "ar": "ar"}
SNOWBALL = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "nl": "dutch",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sv": "swedish",
    "da": "danish",
    "fi": "finnish",
    "hu": "hungarian",
    "no": "norwegian",
    "ar": "arabic",
}
_FINAL = re.compile(r"Final score:\s*([-+0-9.eE]+)")
_NUMBER = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


@dataclass
class MeteorResult:
    score: float  # 0-100
    method: str  # "METEOR 1.5" or a label that starts with "METEOR (fallback: ...)"
    official: bool


@dataclass
class MeteorSetup:
    """What is available for the official scorer; `why_not` says what is missing."""

    java: str | None
    jar: Path | None
    paraphrase: bool
    lang: str

    @property
    def official(self) -> bool:
        return bool(self.java and self.jar and self.paraphrase)

    @property
    def why_not(self) -> str:
        if not self.jar:
            return f"no METEOR 1.5 jar (give --meteor-jar PATH or set {JAR_ENV})"
        if not self.java:
            return "no `java` on PATH"
        if not self.paraphrase:
            return (
                f"{self.jar} has no paraphrase table for '{self.lang}' (data/paraphrase-{JAR_LANG.get(self.lang)}.gz)"
            )
        return ""


def find_setup(lang: str, jar: str | os.PathLike | None = None) -> MeteorSetup:
    """Look for java, the jar (argument, else $IKD_METEOR_JAR) and its paraphrase table for `lang`."""
    path = jar or os.environ.get(JAR_ENV)
    jar_path = None
    if path:
        jar_path = Path(path)
        if not jar_path.is_file():
            raise IkdError(f"{jar_path}: METEOR jar not found")
    java = shutil.which("java")
    code = JAR_LANG.get(lang)
    return MeteorSetup(java, jar_path, bool(jar_path and code and _has_paraphrase(jar_path, code)), lang)


def _has_paraphrase(jar: Path, code: str) -> bool:
    name = f"paraphrase-{code}.gz"
    if (jar.parent / "data" / name).is_file():
        return True
    try:
        with zipfile.ZipFile(jar) as z:
            return any(n.endswith(name) for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def parse_jar_output(text: str) -> float:
    """The corpus score (0-1) from METEOR's output: its "Final score:" line, or with -q a bare number."""
    found = _FINAL.findall(text)
    if found:
        return float(found[-1])
    for line in reversed(text.strip().splitlines()):
        m = _NUMBER.match(line)
        if m:
            return float(m.group(1))
    raise IkdError(f"could not find a score in METEOR's output: {text.strip()[-300:]!r}")


def run_jar(setup: MeteorSetup, hyps: list[str], refs: list[str], modules: str | None = None) -> float:
    """Run the jar on temporary files with an English locale (Java prints numbers in the locale's format)."""
    code = JAR_LANG.get(setup.lang)
    if code is None:
        raise IkdError(f"METEOR 1.5 does not support the language '{setup.lang}'")
    env = dict(os.environ, LC_ALL="en_US.UTF-8", LANG="en_US.UTF-8", LANGUAGE="en")
    with tempfile.TemporaryDirectory(prefix="ikd-meteor-") as tmp:
        hyp_file, ref_file = Path(tmp) / "hyp", Path(tmp) / "ref"
        hyp_file.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        ref_file.write_text("".join(r + "\n" for r in refs), encoding="utf-8")
        cmd = [setup.java, "-Xmx2G", "-Duser.language=en", "-Duser.country=US", "-Dfile.encoding=UTF-8"]
        cmd += ["-jar", str(setup.jar), str(hyp_file), str(ref_file), "-l", code, "-norm", "-q"]
        if modules:
            cmd += ["-m", modules]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise IkdError(f"METEOR ({setup.jar}) failed with status {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return parse_jar_output(proc.stdout)


class _NoSynonyms:
    """Stands in for NLTK's WordNet reader: no synsets, so the synonym stage matches nothing (and
    nothing is downloaded)."""

    def synsets(self, word: str, *args, **kwargs) -> list:
        return []


class _Identity:
    def stem(self, word: str) -> str:
        return word


def fallback_label(lang: str) -> str:
    name = SNOWBALL.get(lang)
    stem = f"Snowball {name} stemmer" if name else f"no stemmer for '{lang}'"
    return f"METEOR (fallback: NLTK meteor_score, {stem}, no synonyms, mean of sentence scores)"


def nltk_meteor(hyps: list[str], refs: list[str], lang: str) -> float:
    """Mean sentence-level NLTK METEOR (0-1) on whitespace tokens."""
    from nltk.translate.meteor_score import meteor_score

    name = SNOWBALL.get(lang)
    if name:
        from nltk.stem.snowball import SnowballStemmer

        stemmer = SnowballStemmer(name)
    else:
        stemmer = _Identity()
    wordnet = _NoSynonyms()
    total = 0.0
    for h, r in zip(hyps, refs):
        h_tok, r_tok = h.split(), r.split()
        if h_tok and r_tok:
            total += meteor_score([r_tok], h_tok, stemmer=stemmer, wordnet=wordnet)
    return total / max(len(hyps), 1)


def meteor(
    hyps: list[str], refs: list[str], lang: str, jar: str | os.PathLike | None = None, require: bool = False
) -> MeteorResult:
    """Corpus METEOR (0-100) with the best scorer available; `require` makes anything but the official
    METEOR 1.5 (jar, java and paraphrase table) an error."""
    setup = find_setup(lang, jar)
    if setup.official:
        return MeteorResult(100.0 * run_jar(setup, hyps, refs), OFFICIAL, True)
    if require:
        raise IkdError(f"--require-meteor: the official METEOR 1.5 cannot run: {setup.why_not}")
    if setup.java and setup.jar and lang in JAR_LANG:
        label = f'METEOR (fallback: METEOR 1.5 jar with -m "exact stem", {setup.why_not})'
        return MeteorResult(100.0 * run_jar(setup, hyps, refs, modules="exact stem"), label, False)
    return MeteorResult(100.0 * nltk_meteor(hyps, refs, lang), fallback_label(lang), False)
