"""ikd: image-free multimodal machine translation by inversion knowledge distillation."""

__version__ = "0.1.0"
