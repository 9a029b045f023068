"""The IKD-MMT model: Transformer-Tiny with generated multimodal pseudo-tokens (see ikd_model.py)."""

from ikd.model.ikd_model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderOutput,
    IKDModel,
    PseudoTokens,
    build_model,
    masked_mean,
)
from ikd.model.transformer import DecoderState

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DecoderState",
    "EncoderOutput",
    "IKDModel",
    "PseudoTokens",
    "build_model",
    "masked_mean",
]
