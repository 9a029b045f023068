"""Ensembles for search: several models behind the one-model search interface (`encode`,
`new_decoder_state`, `decode`). A step's distribution is the mean of the models' probabilities, taken in log
space as fairseq does: log((1/M) * sum_i p_i) = logsumexp_i(log p_i) - log M."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ikd.errors import IkdError
from ikd.inference.loading import Loaded
from ikd.inference.search import new_search_state, search_view


@dataclass
class EnsembleEncoderOutput:
    """One encoder output per model, row-aligned."""

    outputs: list

    def index_select(self, index: Tensor) -> EnsembleEncoderOutput:
        return EnsembleEncoderOutput([o.index_select(index) for o in self.outputs])


@dataclass
class EnsembleState:
    """One decoder state per model; every reordering is applied to each."""

    states: list

    def reorder(self, index: Tensor) -> EnsembleState:
        for s in self.states:
            s.reorder(index)
        return self

    def reorder_beams(self, index: Tensor) -> EnsembleState:
        for s in self.states:
            getattr(s, "reorder_beams", s.reorder)(index)
        return self

    def expand_beams(self, beam: int) -> EnsembleState:
        for s in self.states:
            s.expand_beams(beam)
        return self

    def select_sentences(self, keep: Tensor, rows: Tensor) -> EnsembleState:
        for s in self.states:
            s.select_sentences(keep, rows)
        return self


class Ensemble(nn.Module):
    """Models with one vocabulary, searched as one: `decode` returns log of the mean probability [N, U, V]
    (already normalised: search's log_softmax leaves it as it is)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = nn.ModuleList(models)
        self._shared = all(
            hasattr(m.new_decoder_state(), "expand_beams") and hasattr(m.new_decoder_state(), "select_sentences")
            for m in models
        )

    @property
    def vocab_size(self) -> int:
        return self.models[0].vocab_size

    def encode(self, src: Tensor) -> EnsembleEncoderOutput:
        """src [B, T] -> each model's encoder output (without what decoding does not read)."""
        return EnsembleEncoderOutput([search_view(m.encode(src)) for m in self.models])

    def new_decoder_state(self):
        state = EnsembleState([new_search_state(m) for m in self.models])
        if not self._shared:  # search then falls back to plain row reordering
            return _RowOnlyState(state.states)
        return state

    def decode(self, tgt_in: Tensor, enc: EnsembleEncoderOutput, state=None) -> Tensor:
        """tgt_in [N, U] -> log mean probability [N, U, V] (fp32)."""
        states = state.states if state is not None else [None] * len(self.models)
        members = zip(self.models, enc.outputs, states)
        lprobs = [torch.log_softmax(m.decode(tgt_in, e, s).float(), dim=-1) for m, e, s in members]
        if len(lprobs) == 1:
            return lprobs[0]
        return torch.logsumexp(torch.stack(lprobs), dim=0) - math.log(len(lprobs))


@dataclass
class _RowOnlyState:
    states: list

    def reorder(self, index: Tensor) -> _RowOnlyState:
        for s in self.states:
            s.reorder(index)
        return self


def load_ensemble(
    paths: Sequence[str | os.PathLike],
    device: str | torch.device | None = "auto",
    expected_vocab=None,
    amp: str | None = None,
    with_distiller: bool = False,
) -> Loaded:
    """Load every checkpoint (or package); one -> as load_for_inference, several -> a Loaded whose model is
    their Ensemble, with the first one's vocabulary, BPE, languages and (`with_distiller`) teacher and
    student. Different vocabularies are an error naming both files."""
    from ikd.inference.loading import load_for_inference

    if not paths:
        raise IkdError("--checkpoint: give at least one checkpoint")
    loaded = [
        load_for_inference(p, device, expected_vocab=expected_vocab, amp=amp, with_distiller=with_distiller and i == 0)
        for i, p in enumerate(paths)
    ]
    if len(loaded) == 1:
        return loaded[0]
    first = loaded[0]
    for other in loaded[1:]:
        if other.vocab.fingerprint() != first.vocab.fingerprint():
            raise IkdError(
                f"{other.path}: its vocabulary ({len(other.vocab)} tokens) differs from that of {first.path} "
                f"({len(first.vocab)} tokens): an ensemble needs models trained on the same vocabulary"
            )
        if (other.src, other.tgt) != (first.src, first.tgt):
            raise IkdError(
                f"{other.path}: translates {other.src}-{other.tgt}, but {first.path} translates {first.src}-{first.tgt}"
            )
    # the shortest position limit of the members bounds the ensemble's
    shortest = min(loaded, key=lambda lo: lo.max_positions)
    return dataclasses.replace(first, model=Ensemble([lo.model for lo in loaded]), recipe=shortest.recipe)
