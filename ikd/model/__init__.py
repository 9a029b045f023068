"""The IKD-MMT model: the translator (Transformer-Tiny with generated pseudo-tokens, translator.py) and the
training-time Distiller (teacher and student CNNs, distiller.py). Import the Distiller from its module: the
translator alone does not load the vision stack."""

from ikd.model.generator import Generator, masked_mean
from ikd.model.transformer import DecoderState
from ikd.model.translator import EncoderOutput, PseudoTokens, TranslationModel, build_translator

__all__ = [
    "DecoderState",
    "EncoderOutput",
    "Generator",
    "PseudoTokens",
    "TranslationModel",
    "build_translator",
    "masked_mean",
]
