"""Configuration of an IKD-MMT translator in transformers: M2M100's (the decoder is M2M100's) plus what the
multimodal encoder needs."""

from __future__ import annotations

from transformers import M2M100Config


class IkdMmtConfig(M2M100Config):
    """feature_shape [C, H, W]: the generated feature map m (P = H*W pseudo-tokens); token_layout "spatial"
    (token p = the C-vector at position p) or "raw" (m.reshape(B, P, C)); text_queries: the encoder's queries are
    the text and the pseudo-tokens (False: the pseudo-tokens only); kv_source "embedding" (every layer's keys and
    values are the embedded source) or "states" (the text rows of the current states)."""

    model_type = "ikd_mmt"
    feature_shape: list[int] | None = None
    token_layout: str = "spatial"
    text_queries: bool = True
    kv_source: str = "embedding"
