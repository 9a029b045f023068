"""Vision side of IKD-MMT, used in training only: frozen teacher CNN, inverted student CNN, KD distances.
The generator of m belongs to the translator (ikd.model.generator); the Distiller (ikd.model.distiller) joins
these parts into the two KD losses.

Public API (shapes for ResNet-50 at 224 px):

    build_teacher(backbone="resnet50", weights="none", image_size=224) -> Teacher
        backbone: resnet50 | resnet18 | vgg19 | alexnet; weights: "none" (random), a torchvision weights name
        ("DEFAULT", "IMAGENET1K_V1", ...), or a local .pth/.pt state dict. Frozen; always in eval mode.
    Teacher.forward(x [B,3,S,S] normalised, grain="model") -> list[Tensor]   (x itself first, final map last)
    Teacher.out_shape -> (C,H,W)                                            ((2048, 7, 7))
    Teacher.feature_shapes(grain) -> list[(C,H,W)]; Teacher.grain_indices(grain) -> list[int]
    build_student(backbone="resnet50", image_size=224, out_shape=None) -> Student
    Student.forward(m [B,C,H,W], grain="model") -> list[Tensor]   (I_s [B,3,S,S] first, m last; aligned with
        the teacher's list: same index = same shape); Student.imagine(m) -> I_s
    distance(x, y, kind="l2") -> scalar    (x = teacher feature of the real image; kinds: l2 l1 linf cosine kl)
    pair_distances(targets, others, kind) -> list[scalar]   (per pair, e.g. for logging)
    kd_losses(teacher_real, student, teacher_syn, kind="l2") -> (irm, iam)
    normalise_images(images uint8 [B,3,S,S]) -> float [B,3,S,S]; IMAGENET_MEAN, IMAGENET_STD
    BACKBONES, GRAINS, DISTANCES

Grain "image" gives one-element lists ([I_r] / [I_s]); the others end with the final map / m.
"""

from ikd.model.vision.distill import DISTANCES, distance, kd_losses, pair_distances
from ikd.model.vision.student import Student, build_student
from ikd.model.vision.teacher import (
    BACKBONES,
    GRAINS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Teacher,
    build_teacher,
    normalise_images,
)

__all__ = [
    "BACKBONES",
    "DISTANCES",
    "GRAINS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Student",
    "Teacher",
    "build_student",
    "build_teacher",
    "distance",
    "kd_losses",
    "normalise_images",
    "pair_distances",
]
