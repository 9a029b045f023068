"""ikd's output length cap for transformers' `generate()`.

ikd (like fairseq) caps each sentence at max_len = int(a * src_len + b) generated tokens (src_len counts the
source's </s>; at least 1, at most max_positions - 1) and at that length keeps only </s>, with its own
log-probability. transformers has one `max_new_tokens` for the whole batch, and its `forced_eos_token_id`
gives the forced </s> a log-probability of 0, which changes the beam scores of capped hypotheses.
`IkdLengthCap` does what ikd does, per sentence; `ikd_generate_kwargs` builds it with the matching
`max_new_tokens`:

    kwargs = ikd_generate_kwargs(batch["attention_mask"], max_len_a=0.0, max_len_b=200)
    model.generate(**batch, num_beams=5, **kwargs)
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList


def length_caps(attention_mask: torch.Tensor, max_len_a: float, max_len_b: int, max_positions: int) -> torch.Tensor:
    """Source attention mask [B, T] -> each sentence's cap on generated tokens, </s> excluded [B] int64."""
    src_len = attention_mask.sum(dim=1).to(torch.float64)
    cap = torch.floor(max_len_a * src_len + max_len_b).to(torch.int64)
    return cap.clamp(min=1, max=max(1, max_positions - 1))


class IkdLengthCap(LogitsProcessor):
    """Once a row has generated its sentence's cap of tokens, every token but </s> gets -inf; </s> keeps its
    score. caps [B] per sentence; the rows of `generate()` are the sentences' beams, in order."""

    def __init__(self, caps: torch.Tensor, eos_token_id: int, decoder_prompt_len: int = 1) -> None:
        self.caps = caps
        self.eos_token_id = eos_token_id
        self.decoder_prompt_len = decoder_prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids.size(1) - self.decoder_prompt_len
        caps = self.caps.to(scores.device).repeat_interleave(scores.size(0) // self.caps.numel())
        capped = caps.le(generated)
        if not bool(capped.any()):
            return scores
        eos = scores[:, self.eos_token_id].clone()
        scores = scores.masked_fill(capped[:, None], float("-inf"))
        scores[:, self.eos_token_id] = torch.where(capped, eos, scores[:, self.eos_token_id])
        return scores


def ikd_generate_kwargs(
    attention_mask: torch.Tensor,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    max_positions: int = 1024,
    eos_token_id: int = 2,
) -> dict:
    """`generate()` arguments for ikd's cap (`ikd translate --max-len-a A --max-len-b B`; a=0, b=200 by default):
    the logits processor and a `max_new_tokens` that leaves room for the last sentence's </s>."""
    caps = length_caps(attention_mask, max_len_a, max_len_b, max_positions)
    return {
        "logits_processor": LogitsProcessorList([IkdLengthCap(caps, eos_token_id)]),
        "max_new_tokens": int(caps.max()) + 1,
    }
