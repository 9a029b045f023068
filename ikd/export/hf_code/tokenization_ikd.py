"""The source and target text of an ikd translator as a transformers tokenizer.

Encoding is ikd's: a raw sentence is lowercased, punctuation-normalised and Moses-tokenised as Multi30K's
`*.lc.norm.tok.*` files are (sacremoses with perl parity), then segmented with the model's subword-nmt codes
(`bpe.codes`, filtered by the source language's subword vocabulary in `bpe_vocab.json`); the glossary tokens
(the mask token `[U]` and any `ikd bpe --glossary` entry) pass through whole, neither lowercased nor escaped.
The ids end with </s> and have no <s>. Decoding drops the decoder's start symbol, stops at </s>, joins the
subword units ("@@ " markers removed) and, with `detokenize=True`, Moses-detokenises (still lowercase).

Self-contained: it needs sacremoses and subword-nmt (pip install sacremoses subword-nmt), not ikd.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil

from transformers import PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "vocab.txt", "codes_file": "bpe.codes", "bpe_vocab_file": "bpe_vocab.json"}
INPUT_MODES = ("raw", "tokenized", "bpe")
MASK = "[U]"
CONTROL = ("<s>", "<pad>", "</s>")  # text that spells one of these is unknown text, not a control symbol
_BPE_MARKERS = re.compile(r"@@( |$)")


class IkdTokenizer(PreTrainedTokenizer):
    """input_mode: "raw" sentences (the default), "tokenized" (lowercased only, then BPE) or "bpe" (already
    segmented), as `ikd translate`'s --tokenized and --bpe."""

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        codes_file: str | None = None,
        bpe_vocab_file: str | None = None,
        src_lang: str = "en",
        tgt_lang: str = "de",
        glossaries: list[str] | None = None,
        input_mode: str = "raw",
        detokenize: bool = False,
        bos_token: str = "<s>",
        pad_token: str = "<pad>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        **kwargs,
    ) -> None:
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode {input_mode!r} is not one of {', '.join(INPUT_MODES)}")
        with open(vocab_file, encoding="utf-8") as f:
            self.tokens = [line.rstrip("\n") for line in f]
        self.encoder = {t: i for i, t in enumerate(self.tokens)}
        self.vocab_file, self.codes_file, self.bpe_vocab_file = vocab_file, codes_file, bpe_vocab_file
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.glossaries = list(glossaries) if glossaries is not None else [MASK]
        self.input_mode = input_mode
        self.detokenize = detokenize
        self._bpe = self._load_bpe(codes_file, bpe_vocab_file, src_lang)
        # without BPE codes ikd keeps the mask token only
        self.keep = tuple(self.glossaries) if self._bpe is not None else (MASK,)
        self._moses: dict[str, object] = {}
        kwargs.setdefault("split_special_tokens", True)  # "</s>" in the text is text, as in ikd
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.pop("special_tokens_pattern", None)  # </s> is appended here, the same in every transformers version
        super().__init__(
            src_lang=src_lang,
            tgt_lang=tgt_lang,
            glossaries=self.glossaries,
            input_mode=input_mode,
            detokenize=detokenize,
            bos_token=bos_token,
            pad_token=pad_token,
            eos_token=eos_token,
            unk_token=unk_token,
            **kwargs,
        )

    def _load_bpe(self, codes_file: str | None, bpe_vocab_file: str | None, lang: str):
        if not codes_file or not os.path.isfile(codes_file):
            return None
        from subword_nmt import apply_bpe

        with open(codes_file, encoding="utf-8") as f:
            codes = f.read()
        if not codes.strip():
            return None
        units = None
        if bpe_vocab_file and os.path.isfile(bpe_vocab_file):
            with open(bpe_vocab_file, encoding="utf-8") as f:
                units = set(json.load(f).get(lang) or ())
        if not units:  # the joint vocabulary keeps every unit the model knows
            units = {t for t in self.tokens[4:]}
        patterns = [re.escape(g) for g in self.glossaries]  # literal strings: subword-nmt takes regexes
        return apply_bpe.BPE(io.StringIO(codes), separator="@@", vocab=units, glossaries=patterns or None)

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder)

    def _convert_token_to_id(self, token: str) -> int:
        return self.encoder.get(token, self.encoder[str(self.unk_token)])

    def _convert_id_to_token(self, index: int) -> str:
        return self.tokens[index]

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """ids + [</s>] (a pair: both, each followed by </s>); never <s>."""
        eos = [self.eos_token_id]
        return token_ids_0 + eos if token_ids_1 is None else token_ids_0 + eos + token_ids_1 + eos

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        if already_has_special_tokens:
            return [int(i == self.eos_token_id) for i in token_ids_0 + (token_ids_1 or [])]
        mask = [0] * len(token_ids_0) + [1]
        return mask if token_ids_1 is None else mask + [0] * len(token_ids_1) + [1]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 2 if pair else 1

    # ------------------------------------------------------------------ preprocessing
    def _moses_tool(self, kind: str, lang: str):
        key = f"{kind}:{lang}"
        if key not in self._moses:
            import sacremoses

            if kind == "norm":  # perl parity: the old Moses script that made Multi30K's files
                self._moses[key] = sacremoses.MosesPunctNormalizer(lang=lang, perl_parity=True)
            elif kind == "tok":
                self._moses[key] = sacremoses.MosesTokenizer(lang=lang)
            else:
                self._moses[key] = sacremoses.MosesDetokenizer(lang=lang)
        return self._moses[key]

    def _preprocess_piece(self, text: str) -> str:
        # the Perl normaliser sees each line with its newline, which some of its rules need
        normalised = self._moses_tool("norm", self.src_lang).normalize(text.lower() + "\n")
        return self._moses_tool("tok", self.src_lang).tokenize(normalised, escape=True, return_str=True)

    def preprocess(self, line: str) -> str:
        """A raw sentence -> lowercased, normalised, Moses-tokenised text; glossary tokens kept as they are."""
        keep = [t for t in self.keep if t and t in line]
        if not keep:
            return self._preprocess_piece(line)
        pattern = "(" + "|".join(re.escape(t) for t in sorted(keep, key=len, reverse=True)) + ")"
        out = []
        for i, piece in enumerate(re.split(pattern, line)):
            if i % 2:
                out.append(piece)
            elif piece.strip():
                out.append(self._preprocess_piece(piece))
        return " ".join(p for p in out if p)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        if not text.strip():
            return []
        if self.input_mode == "raw":
            tokens = self.preprocess(text).split()
        elif self.input_mode == "tokenized":
            tokens = [t if t in self.keep else t.lower() for t in text.split()]
        else:
            tokens = text.split()
        if self.input_mode != "bpe" and self._bpe is not None and tokens:
            tokens = self._bpe.segment_tokens(tokens)
        return [str(self.unk_token) if t in CONTROL else t for t in tokens]

    # ------------------------------------------------------------------ postprocessing
    def _hypothesis(self, ids: list[int]) -> list[int]:
        """Generated ids -> the translation's ids: no leading </s> (the decoder's start), nothing from the next
        </s> on, no <s> or <pad>."""
        if ids and ids[0] == self.eos_token_id:
            ids = ids[1:]
        if self.eos_token_id in ids:
            ids = ids[: ids.index(self.eos_token_id)]
        return [i for i in ids if i not in (self.bos_token_id, self.pad_token_id)]

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        ids = [int(token_ids)] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        if skip_special_tokens:
            ids = self._hypothesis(ids)
        return self.convert_tokens_to_string([self.tokens[i] for i in ids])

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        text = _BPE_MARKERS.sub("", " ".join(tokens))
        if self.detokenize:
            text = self._moses_tool("detok", self.tgt_lang).detokenize(text.split(), return_str=True, unescape=True)
        return text

    # ------------------------------------------------------------------ saving
    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        saved = []
        for key, name in VOCAB_FILES_NAMES.items():
            source = getattr(self, key)
            if not source or not os.path.isfile(source):
                continue
            target = os.path.join(save_directory, prefix + name)
            if os.path.abspath(source) != os.path.abspath(target):
                shutil.copyfile(source, target)
            saved.append(target)
        return tuple(saved)
