"""The Distiller: the training-time vision side of IKD-MMT (paper section 3.2). A frozen teacher CNN and the
trainable inverted-CNN student turn the translator's generated m and the real images into IrM-KD (eq. 7) and
IaM-KD (eq. 8). Translation never builds it; `ikd retrieve` uses its teacher, `ikd analyze imagine` its
student."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ikd.errors import IkdError
from ikd.model.generator import Shape
from ikd.model.vision import IMAGENET_MEAN, IMAGENET_STD, build_student, build_teacher, distance, kd_losses
from ikd.model.vision.teacher import feature_shapes_of, shape_teacher
from ikd.recipe import KDConfig, VisionConfig


@dataclass
class KDTerms:
    """The distillation terms of one batch (fp32 scalars). irm and iam carry gradient, lambdas not applied;
    image (d(I_r, I_s), part of both), irm_feat and iam_feat (their feature terms) are detached, for logs."""

    irm: Tensor
    iam: Tensor
    image: Tensor
    irm_feat: Tensor
    iam_feat: Tensor


def teacher_feature_shape(vision: VisionConfig) -> Shape:
    """(C, H, W) of the teacher's last feature map at vision.image_size, from a weightless (meta) teacher."""
    return feature_shapes_of(shape_teacher(vision.backbone, vision.image_size), vision.image_size)[-1]


class Distiller(nn.Module):
    """teacher (frozen, always in eval mode) + student; `forward(m, images) -> KDTerms`."""

    def __init__(
        self, teacher: nn.Module, student: nn.Module, kd: KDConfig, image_size: int, channels_last: bool
    ) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = student
        self.grain = kd.grain
        self.distance = kd.distance
        self.image_size = image_size
        self.channels_last = channels_last
        teacher.requires_grad_(False)
        teacher.eval()
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("_pixel_scale", 1.0 / (255.0 * std), False)
        self.register_buffer("_pixel_shift", -mean / std, False)
        self._resize_reported = False

    def train(self, mode: bool = True) -> Distiller:
        """As nn.Module.train, but the teacher stays in eval mode (frozen, running BatchNorm statistics)."""
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def feature_shape(self) -> Shape:
        """(C, H, W) of the teacher's last map: the shape of m."""
        return tuple(self.teacher.out_shape)  # type: ignore[return-value]

    def normalise_images(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, S, S] -> float [B, 3, s, s] ImageNet-normalised at the teacher's size s (bilinear,
        antialiased resize on the device when S differs); channels_last when the recipe asks for it."""
        if images.dtype != torch.uint8:
            raise IkdError(f"images must be uint8 [B, 3, S, S] pixels, got {images.dtype}")
        if images.dim() != 4 or images.size(1) != 3:
            raise IkdError(f"images must be uint8 [B, 3, S, S], got shape {tuple(images.shape)}")
        x = torch.addcmul(self._pixel_shift, images.float(), self._pixel_scale)
        if x.shape[-2:] != (self.image_size, self.image_size):
            if not self._resize_reported:
                self._resize_reported = True
                warnings.warn(
                    f"images are {x.shape[-2]}x{x.shape[-1]} but vision.image_size is {self.image_size}: "
                    "resizing on the device (bilinear, antialiased); prepare the data at that size to avoid it",
                    stacklevel=2,
                )
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def teacher_features(self, images: Tensor) -> Tensor:
        """uint8 images [B, 3, S, S] -> the teacher's last feature map [B, C, H, W] (what m is distilled to)."""
        return self.teacher(self.normalise_images(images), "model")[-1]

    def imagine(self, m: Tensor) -> Tensor:
        """m [B, C, H, W] -> the student's synthetic image I_s [B, 3, s, s] (normalised pixel space)."""
        return self.student.imagine(m)

    def forward(self, m: Tensor, images: Tensor) -> KDTerms:
        """IrM-KD and IaM-KD for generated m [B, C, H, W] and the real uint8 images [B, 3, S, S]."""
        real = self.normalise_images(images)
        with torch.no_grad():
            teacher_real = self.teacher(real, self.grain)
        student = self.student(m, self.grain)
        teacher_syn = self.teacher(student[0], self.grain)
        irm, iam = kd_losses(teacher_real, student, teacher_syn, self.distance)
        with torch.no_grad():
            image = distance(teacher_real[0], student[0], self.distance)
        return KDTerms(irm, iam, image, irm.detach() - image, iam.detach() - image)


def build_distiller(
    vision: VisionConfig, kd: KDConfig, channels_last: bool = False, load_teacher_weights: bool = True
) -> Distiller:
    """Teacher and student of `vision`. load_teacher_weights=False builds a random teacher (for a checkpoint's
    state to be loaded into: nothing is downloaded)."""
    weights = vision.teacher_weights if load_teacher_weights else "none"
    teacher = build_teacher(vision.backbone, weights, vision.image_size)
    student = build_student(vision.backbone, vision.image_size, tuple(teacher.out_shape))
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
        student.to(memory_format=torch.channels_last)
    return Distiller(teacher, student, kd, vision.image_size, channels_last)
