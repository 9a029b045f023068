"""Text in, translations out: preprocessing (raw -> Multi30K tokens -> BPE -> ids), length-sorted batches,
search, restoring input order, postprocessing (de-BPE, optional detokenisation), and streaming in chunks.

The public API (also `from ikd import Translator`)::

    translator = Translator.from_checkpoint("runs/en-de/checkpoint_average.pt", device="auto", beam=5)
    translator.translate(["A man rides a horse."])          # -> ["ein mann reitet ein pferd ."]
    translator.translate_nbest(["A man rides a horse."], 3)  # -> [[(text, score), ...]]
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ikd.data.text import detokenize, remove_bpe
from ikd.device import keep_freed_host_memory
from ikd.errors import IkdError
from ikd.inference.loading import Loaded
from ikd.inference.search import Hypothesis, beam_search, capped_beam, greedy_search
from ikd.inference.source import SourceEncoder
from ikd.ranges import check_options


@dataclass
class SearchOptions:
    beam: int = 5
    lenpen: float = 1.0
    max_len_a: float = 0.0  # the paper's (fairseq's default) cap: 0 * src_len + 200
    max_len_b: int = 200
    nbest: int = 1

    def check(self) -> None:
        """IkdError naming the first option out of its range (ikd.ranges.OPTION_RANGES)."""
        check_options(
            beam=self.beam, nbest=self.nbest, lenpen=self.lenpen, max_len_a=self.max_len_a, max_len_b=self.max_len_b
        )


@dataclass
class Stats:
    sentences: int = 0  # non-empty input lines translated
    lines: int = 0
    target_tokens: int = 0  # generated subword tokens of the best hypotheses, EOS included
    truncated: int = 0
    seconds: float = 0.0


class Translator:
    """Translate lines with a loaded checkpoint. Never reads images.

    Build one with `Translator.from_checkpoint(path, ...)`; `translate` and `translate_nbest` take a list
    of sentences (raw text by default, as `ikd translate` reads them) and return one result per sentence,
    in order; an empty sentence gives an empty translation. `input_mode` "tokenized" takes lowercased,
    Moses-tokenised text, "bpe" text already segmented with the checkpoint's codes. Output is lowercased,
    tokenised text (how the paper scores), or detokenised with `detok=True` (still lowercase: the training
    data is)."""

    def __init__(
        self,
        loaded: Loaded,
        options: SearchOptions | None = None,
        *,
        input_mode: str = "raw",
        detok: bool = False,
        batch_size: int = 128,
        max_tokens: int = 0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        check_options(batch_size=batch_size, max_tokens=max_tokens)
        self.loaded = loaded
        self.warn = warn or (lambda message: None)
        self.options = self._usable(options or SearchOptions())
        self.input_mode = input_mode
        self.detok = detok
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.encoder = SourceEncoder(loaded, input_mode, self.warn)
        self.stats = Stats()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        device: str = "auto",
        beam: int = 5,
        *,
        lenpen: float = 1.0,
        max_len_a: float = 0.0,
        max_len_b: int = 200,
        nbest: int = 1,
        input_mode: str = "raw",
        detok: bool = False,
        batch_size: int = 128,
        max_tokens: int = 0,
        amp: str | None = None,
        vocab: str | os.PathLike | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> Translator:
        """Load a checkpoint written by `ikd train` (or a folder from `ikd export`) and wrap it for translation;
        several paths decode with their ensemble (the mean of the models' probabilities; one vocabulary).

        device: auto (a GPU when present), cpu, cuda or cuda:N. beam 1 is greedy search. lenpen, max_len_a
        and max_len_b are `ikd translate`'s --lenpen, --max-len-a, --max-len-b. amp: auto|bf16|fp16|off on
        CUDA (default: the recipe's). vocab: refuse a checkpoint whose vocabulary is not this vocab.txt.
        warn receives warnings (e.g. a source longer than the model's limit), default: ignored."""
        from ikd.inference.ensemble import load_ensemble

        if amp is not None and amp not in ("auto", "bf16", "fp16", "off"):
            raise IkdError(f"amp {amp!r}: expected auto, bf16, fp16 or off")
        options = SearchOptions(beam, lenpen, max_len_a, max_len_b, nbest)
        options.check()
        check_options(batch_size=batch_size, max_tokens=max_tokens)  # before the model is loaded
        expected = None
        if vocab is not None:
            from ikd.data.vocab import Vocabulary

            expected = Vocabulary.load(vocab)
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        loaded = load_ensemble(paths, device, expected_vocab=expected, amp=amp)
        return cls(
            loaded,
            options,
            input_mode=input_mode,
            detok=detok,
            batch_size=batch_size,
            max_tokens=max_tokens,
            warn=warn,
        )

    def translate(self, sentences: Sequence[str]) -> list[str]:
        """Sentences -> their best translations, one string per sentence, in order."""
        return [best[0][0] for best in self._with_nbest(sentences, 1)]

    def translate_nbest(self, sentences: Sequence[str], n: int) -> list[list[tuple[str, float]]]:
        """Sentences -> for each, its n best (translation, score) pairs, best first; n must not exceed the
        beam size. The score is the length-normalised log-probability that beam search ranks by."""
        return self._with_nbest(sentences, n)

    def _with_nbest(self, sentences: Sequence[str], n: int) -> list[list[tuple[str, float]]]:
        if isinstance(sentences, str):
            raise TypeError("translate a list of sentences, e.g. translate([text]), not a single string")
        saved = self.options
        try:
            self.options = self._usable(dataclasses.replace(saved, nbest=n))
            lines = [line.replace("\n", " ").replace("\r", " ") for line in sentences]
            return self.translate_lines(lines)
        finally:
            self.options = saved

    def _usable(self, options: SearchOptions) -> SearchOptions:
        """The options checked, with the beam (and nbest) narrowed to the tokens a hypothesis can start with."""
        options.check()
        vocab = self.loaded.vocab
        beam = capped_beam(options.beam, len(vocab), vocab.pad, vocab.bos, vocab.eos)
        if beam == options.beam:
            return options
        nbest = min(options.nbest, beam)
        self.warn(
            f"--beam {options.beam}: only {beam} tokens of the vocabulary can start a translation; "
            f"searching with beam {beam}" + (f" and --nbest {nbest}" if nbest != options.nbest else "")
        )
        return dataclasses.replace(options, beam=beam, nbest=nbest)

    # ------------------------------------------------------------------ text <-> ids
    def source_ids(self, line: str, number: int) -> list[int] | None:
        """One input line (1-based `number`, for warnings) -> source ids with EOS, or None when empty."""
        before = self.encoder.truncated
        ids = self.encoder.ids(line, f"line {number}")
        self.stats.truncated += self.encoder.truncated - before
        return ids

    def target_text(self, tokens: list[int]) -> str:
        """Generated ids -> de-BPE'd tokenised text, or detokenised with `detok`."""
        text = remove_bpe(" ".join(self.loaded.vocab.decode(tokens)))
        if self.detok:
            text = detokenize(text.split(), self.loaded.tgt)
        return text

    # ------------------------------------------------------------------ search
    def batches(self, lengths: list[int]) -> Iterator[list[int]]:
        """Positions grouped into batches of similar length (longest first): at most batch_size sentences
        and, with max_tokens, sentences x longest source <= max_tokens."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batch: list[int] = []
        for i in order:
            longest = lengths[batch[0]] if batch else lengths[i]
            too_many = len(batch) >= self.batch_size
            too_big = self.max_tokens and batch and (len(batch) + 1) * longest > self.max_tokens
            if batch and (too_many or too_big):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def search(self, items: list[list[int]]) -> list[list[Hypothesis]]:
        """Source id lists -> hypotheses (best first), in the order given."""
        lo, opt = self.loaded, self.options
        vocab = lo.vocab
        out: list[list[Hypothesis]] = [[] for _ in items]
        if lo.device.type == "cpu":
            keep_freed_host_memory()  # the search's large per-step tensors (logits, caches)
        with torch.no_grad(), lo.autocast():
            for batch in self.batches([len(x) for x in items]):
                width = max(len(items[i]) for i in batch)
                src = torch.full((len(batch), width), vocab.pad, dtype=torch.long)
                for row, i in enumerate(batch):
                    src[row, : len(items[i])] = torch.tensor(items[i], dtype=torch.long)
                src = src.to(lo.device, non_blocking=True)
                common = dict(pad=vocab.pad, bos=vocab.bos, eos=vocab.eos, max_positions=lo.max_positions)
                if opt.beam == 1:
                    hyps = greedy_search(lo.model, src, opt.max_len_a, opt.max_len_b, opt.lenpen, **common)
                else:
                    hyps = beam_search(
                        lo.model, src, opt.beam, opt.lenpen, opt.max_len_a, opt.max_len_b, opt.nbest, **common
                    )
                for i, h in zip(batch, hyps):
                    out[i] = h
        return out

    def translate_lines(self, lines: list[str], first_number: int = 1) -> list[list[tuple[str, float]]]:
        """Lines -> for each line its n-best (text, score) list; an empty line gives [("", 0.0)] * nbest."""
        start = time.perf_counter()
        ids = [self.source_ids(line, first_number + i) for i, line in enumerate(lines)]
        todo = [i for i, x in enumerate(ids) if x is not None]
        found = self.search([ids[i] for i in todo])
        result: list[list[tuple[str, float]]] = [[("", 0.0)] * self.options.nbest for _ in lines]
        for i, hyps in zip(todo, found):
            result[i] = [(self.target_text(h.tokens), h.score) for h in hyps]
            self.stats.target_tokens += len(hyps[0].tokens) + 1 if hyps else 0
        self.stats.sentences += len(todo)
        self.stats.lines += len(lines)
        self.stats.seconds += time.perf_counter() - start
        return result

    def format(self, index: int, nbest: list[tuple[str, float]]) -> list[str]:
        """Output lines for input line `index` (0-based): the best text, or with nbest > 1 Moses-style
        `index ||| text ||| score` lines."""
        if self.options.nbest == 1:
            return [nbest[0][0] if nbest else ""]
        return [f"{index} ||| {text} ||| {score:.4f}" for text, score in nbest]

    def stream(self, lines: Iterable[str], write: Callable[[str], None], chunk_lines: int = 2000) -> Stats:
        """Translate an iterable of lines chunk by chunk (bounded memory); `write` gets each chunk's output
        text (newline-terminated lines, input order) as soon as the chunk is done."""
        chunk: list[str] = []
        done = 0
        for line in lines:
            chunk.append(line)
            if len(chunk) >= chunk_lines:
                done = self._flush(chunk, done, write)
                chunk = []
        if chunk:
            self._flush(chunk, done, write)
        return self.stats

    def _flush(self, chunk: list[str], done: int, write: Callable[[str], None]) -> int:
        results = self.translate_lines(chunk, first_number=done + 1)
        write("".join(out + "\n" for i, r in enumerate(results) for out in self.format(done + i, r)))
        return done + len(chunk)
