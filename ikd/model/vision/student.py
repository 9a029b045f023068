"""The student S: the teacher's stages mirrored (paper Table 7), from m back to a synthetic image I_s.

Every teacher unit that maps a feature f_{k-1} to f_k has a student counterpart that maps a tensor shaped like
f_k to one shaped like f_{k-1}; chaining them from m (shaped like the teacher's last map) gives the student's
features in the teacher's order: index 0 = I_s, last = m, equal shapes at equal indices for every grain.

Design decisions (docs/architecture.md, docs/differences.md):
- Blocks are chained (the authors' model/block grains never chain them: docs/differences.md).
- Every down-sampling teacher op (strided conv, max-pool, strided shortcut) becomes a transposed conv with
  the same stride and a kernel rounded up to a multiple of the stride (3x3/2 -> 4x4/2, 7x7/2 -> 8x8/2,
  11x11/4 -> 12x12/4, 1x1/2 shortcut -> 2x2/2, 3x3/2 pool -> 4x4/2) so the kernel overlaps evenly (no
  checkerboard); padding and output padding are solved from the teacher's shapes, so any image size the
  teacher accepts gives exactly matching shapes.
- BN + ReLU after every student conv except the last (I_s is an unbounded linear output compared with
  normalised pixels); also in the VGG/AlexNet mirrors, which have no BN in the teacher, so that the plain
  16-conv VGG mirror trains from scratch. BN behaves normally (batch stats in train, running stats in eval).
"""

from __future__ import annotations

import abc
import math
import typing

from torch import Tensor, nn

from ikd.errors import IkdError
from ikd.model.vision.teacher import (
    PlainTeacher,
    ResNetTeacher,
    Shape,
    Teacher,
    check_backbone,
    check_grain,
    shape_teacher,
)

if typing.TYPE_CHECKING:  # torchvision costs seconds to import; translation does not need it
    from torchvision.models.resnet import BasicBlock, Bottleneck


def _solve(k: int, s: int, n_in: int, n_out: int) -> tuple[int, int]:
    """(padding, output_padding) so that ConvTranspose(k, s) maps n_in to n_out; IkdError if impossible."""
    r = (n_in - 1) * s + k - n_out  # = 2 * padding - output_padding
    if r < 0:
        p, op = 0, -r
    else:
        p = math.ceil(r / 2)
        op = 2 * p - r
    if op >= s:
        raise IkdError(f"vision.image_size: no {k}x{k}/{s} transposed conv maps {n_in} to {n_out} pixels")
    return p, op


def up_conv(c_in: int, c_out: int, k: int, s: int, hw_in: tuple[int, int], hw_out: tuple[int, int], bias: bool):
    """ConvTranspose2d(c_in -> c_out, k, stride s) whose output is exactly hw_out for an input of hw_in."""
    (ph, oph), (pw, opw) = _solve(k, s, hw_in[0], hw_out[0]), _solve(k, s, hw_in[1], hw_out[1])
    return nn.ConvTranspose2d(c_in, c_out, k, s, padding=(ph, pw), output_padding=(oph, opw), bias=bias)


def _mirror_kernel(k: int, s: int) -> int:
    return math.ceil(k / s) * s


def _hw(shape: Shape) -> tuple[int, int]:
    return shape[1], shape[2]


class Student(nn.Module, abc.ABC):
    """Inverted CNN: m [B,C,H,W] -> the grain's features in teacher order (index 0 = I_s [B,3,S,S], last = m)."""

    def __init__(self, teacher: Teacher) -> None:
        super().__init__()
        self.backbone = teacher.backbone
        self.image_size = teacher.image_size
        self.out_shape: Shape = teacher.out_shape
        self._layer_shapes = teacher.feature_shapes("layer")
        self._grains = {g: teacher.grain_indices(g) for g in ("model", "block", "layer", "image")}

    @abc.abstractmethod
    def _run(self, m: Tensor, taps: set[int]) -> dict[int, Tensor]:
        """m -> {layer-grain index: feature} for the indices in `taps` (index 0, I_s, always present)."""

    def feature_shapes(self, grain: str = "layer") -> list[Shape]:
        """(C,H,W) of every feature that `forward(m, grain)` returns (equal to the teacher's for that grain)."""
        check_grain(grain)
        return [self._layer_shapes[i] for i in self._grains[grain]]

    def forward(self, m: Tensor, grain: str = "model") -> list[Tensor]:
        """m [B,C,H,W] (the generator's output) -> [I_s [B,3,S,S], ..., m] aligned with the teacher's list."""
        check_grain(grain)
        if tuple(m.shape[1:]) != self.out_shape:
            raise ValueError(f"student input must be [B,{','.join(map(str, self.out_shape))}], got {list(m.shape)}")
        idx = self._grains[grain]
        feats = self._run(m, set(idx))
        return [feats[i] for i in idx]

    def imagine(self, m: Tensor) -> Tensor:
        """m [B,C,H,W] -> I_s [B,3,S,S] (normalised pixel space)."""
        return self.forward(m, "image")[0]


def _kaiming(module: nn.Module) -> None:
    for mod in module.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)


# -- ResNet ----------------------------------------------------------------------------------------------------
class InvertedBottleneck(nn.Module):
    """Mirror of a torchvision Bottleneck(inplanes, w, stride): [4w, H/s] -> [inplanes, H].

    conv3' 1x1 4w->w (like the teacher's conv2 activation), conv2' 3x3 or 4x4/2 transposed (like its conv1
    activation), conv1' 1x1 w->inplanes, plus the mirrored shortcut; ReLU after the sum (like the block input).
    """

    def __init__(self, block: Bottleneck, hw_in: tuple[int, int], hw_out: tuple[int, int]) -> None:
        super().__init__()
        inplanes, w, c = block.conv1.in_channels, block.conv1.out_channels, block.conv3.out_channels
        stride = block.conv2.stride[0]
        self.conv3 = nn.Conv2d(c, w, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(w)
        if stride == 1:
            self.conv2: nn.Module = nn.Conv2d(w, w, 3, padding=1, bias=False)
        else:
            self.conv2 = up_conv(w, w, _mirror_kernel(3, stride), stride, hw_out, hw_in, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv1 = nn.Conv2d(w, inplanes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.shortcut = _mirror_shortcut(block, hw_in, hw_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        """y [B,4w,H/s,W/s] -> (x [B,inplanes,H,W], [like conv1 act [B,w,H,W], like conv2 act [B,w,H/s,W/s]])."""
        b3 = self.relu(self.bn3(self.conv3(y)))
        b2 = self.relu(self.bn2(self.conv2(b3)))
        out = self.bn1(self.conv1(b2))
        out = self.relu(out + (y if self.shortcut is None else self.shortcut(y)))
        return out, [b2, b3]


class InvertedBasicBlock(nn.Module):
    """Mirror of a torchvision BasicBlock(inplanes, planes, stride): [planes, H/s] -> [inplanes, H]."""

    def __init__(self, block: BasicBlock, hw_in: tuple[int, int], hw_out: tuple[int, int]) -> None:
        super().__init__()
        inplanes, planes = block.conv1.in_channels, block.conv1.out_channels
        stride = block.conv1.stride[0]
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1:
            self.conv1: nn.Module = nn.Conv2d(planes, inplanes, 3, padding=1, bias=False)
        else:
            self.conv1 = up_conv(planes, inplanes, _mirror_kernel(3, stride), stride, hw_out, hw_in, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.shortcut = _mirror_shortcut(block, hw_in, hw_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        """y [B,planes,H/s,W/s] -> (x [B,inplanes,H,W], [like conv1 act [B,planes,H/s,W/s]])."""
        b = self.relu(self.bn2(self.conv2(y)))
        out = self.bn1(self.conv1(b))
        out = self.relu(out + (y if self.shortcut is None else self.shortcut(y)))
        return out, [b]


def _mirror_shortcut(
    block: BasicBlock | Bottleneck, hw_in: tuple[int, int], hw_out: tuple[int, int]
) -> nn.Sequential | None:
    if block.downsample is None:
        return None
    conv: nn.Conv2d = block.downsample[0]
    c_in, c_out, stride = conv.in_channels, conv.out_channels, conv.stride[0]
    if stride == 1:
        layer: nn.Module = nn.Conv2d(c_out, c_in, 1, bias=False)
    else:
        layer = up_conv(c_out, c_in, _mirror_kernel(1, stride), stride, hw_out, hw_in, bias=False)
    return nn.Sequential(layer, nn.BatchNorm2d(c_in))


class ResNetStudent(Student):
    """Inverted ResNet: S-layer4 .. S-layer1 (blocks in reverse, chained), 4x4/2 "unpool" + BN + ReLU, 8x8/2 conv.

    Layer-grain indices match the teacher's: 0 image, 1 stem activation, 2 maxpool output, then per teacher block
    (conv1 activation, [conv2 activation,] block output); the last is m.
    """

    def __init__(self, teacher: ResNetTeacher) -> None:
        from torchvision.models.resnet import Bottleneck  # here, not at the top: translation never imports it

        super().__init__(teacher)
        shapes = self._layer_shapes
        blocks = [b for layer in teacher.layers() for b in layer]
        self.per_block = 3 if isinstance(blocks[0], Bottleneck) else 2
        self.layers = nn.ModuleList()  # layers[i][j] mirrors teacher layer{i+1}[j]
        k = 2  # index of the current block's input (maxpool output for the first block)
        for layer in teacher.layers():
            inverted = nn.ModuleList()
            for block in layer:
                hw_in, hw_out = _hw(shapes[k]), _hw(shapes[k + self.per_block])
                cls = InvertedBottleneck if isinstance(block, Bottleneck) else InvertedBasicBlock
                inverted.append(cls(block, hw_in, hw_out))
                k += self.per_block
            self.layers.append(inverted)
        c_stem = shapes[1][0]
        pool = teacher.maxpool
        pk, ps = int(_first(pool.kernel_size)), int(_first(pool.stride))
        self.unpool = up_conv(c_stem, c_stem, _mirror_kernel(pk, ps), ps, _hw(shapes[2]), _hw(shapes[1]), bias=False)
        self.unpool_bn = nn.BatchNorm2d(c_stem)
        ck, cs = teacher.conv1.kernel_size[0], teacher.conv1.stride[0]
        self.conv_out = up_conv(c_stem, 3, _mirror_kernel(ck, cs), cs, _hw(shapes[1]), _hw(shapes[0]), bias=True)
        self.relu = nn.ReLU(inplace=True)
        _kaiming(self)

    def _run(self, m: Tensor, taps: set[int]) -> dict[int, Tensor]:
        out: dict[int, Tensor] = {}
        n = len(self._layer_shapes)
        x = m
        k = n - 1  # index of x in the teacher's list
        for layer in reversed(self.layers):
            for block in reversed(layer):
                if k in taps:
                    out[k] = x
                x, inner = block(x)
                k -= self.per_block
                for j, t in enumerate(inner):
                    if k + 1 + j in taps:
                        out[k + 1 + j] = t
        assert k == 2
        if 2 in taps:
            out[2] = x
        x = self.relu(self.unpool_bn(self.unpool(x)))
        if 1 in taps:
            out[1] = x
        out[0] = self.conv_out(x)
        return out


def _first(v: int | tuple[int, ...]) -> int:
    return v if isinstance(v, int) else v[0]


# -- VGG / AlexNet ---------------------------------------------------------------------------------------------
class PlainStudent(Student):
    """Mirror of a VGG/AlexNet `features` stack: units[k-1] maps a tensor like teacher feature k to one like k-1.

    A teacher conv+ReLU becomes a conv (stride 1, same size) or a transposed conv (strided) with the channels
    swapped; a max-pool becomes a transposed conv with the pool's stride; each is followed by BN + ReLU except
    units[0], which outputs I_s.
    """

    def __init__(self, teacher: PlainTeacher) -> None:
        super().__init__(teacher)
        shapes = self._layer_shapes
        ops = [op for i in range(len(teacher.features)) if (op := _unit_op(teacher.features, i)) is not None]
        assert len(ops) == len(shapes) - 1
        self.units = nn.ModuleList()
        for k, op in enumerate(ops, start=1):
            (c_out, *hw_out), (c_in, *hw_in) = shapes[k - 1], shapes[k]
            last = k == 1
            if isinstance(op, nn.Conv2d):
                kk, s = op.kernel_size[0], op.stride[0]
                if s == 1 and hw_in == hw_out and kk % 2 == 1:
                    conv: nn.Module = nn.Conv2d(c_in, c_out, kk, padding=kk // 2, bias=last)
                else:
                    conv = up_conv(c_in, c_out, _mirror_kernel(kk, s), s, tuple(hw_in), tuple(hw_out), bias=last)
            else:
                kk, s = int(_first(op.kernel_size)), int(_first(op.stride))
                conv = up_conv(c_in, c_out, _mirror_kernel(kk, s), s, tuple(hw_in), tuple(hw_out), bias=last)
            unit = nn.Sequential(conv) if last else nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
            self.units.append(unit)
        _kaiming(self)

    def _run(self, m: Tensor, taps: set[int]) -> dict[int, Tensor]:
        out: dict[int, Tensor] = {}
        x = m
        for k in range(len(self.units), 0, -1):
            if k in taps:
                out[k] = x
            x = self.units[k - 1](x)
        out[0] = x
        return out


def _unit_op(features: nn.Sequential, i: int) -> nn.Module | None:
    """The op of the teacher unit that ends at features[i] (a ReLU after a conv, or a max-pool), else None."""
    mod = features[i]
    if isinstance(mod, nn.MaxPool2d):
        return mod
    if isinstance(mod, nn.ReLU):
        prev = features[i - 1]
        if not isinstance(prev, nn.Conv2d):  # pragma: no cover - torchvision's VGG/AlexNet always have conv, relu
            raise TypeError(f"unexpected {type(prev).__name__} before a ReLU")
        return prev
    return None


def build_student(backbone: str = "resnet50", image_size: int = 224, out_shape: Shape | None = None) -> Student:
    """The trainable inverted CNN for `backbone` at `image_size`; `out_shape` (the teacher's, i.e. m's) is checked."""
    check_backbone(backbone)
    teacher = shape_teacher(backbone, image_size)
    if out_shape is not None and tuple(out_shape) != teacher.out_shape:
        raise IkdError(
            f"student for {backbone} at {image_size} px starts from m of shape {teacher.out_shape}, "
            f"not {tuple(out_shape)}"
        )
    if isinstance(teacher, ResNetTeacher):
        return ResNetStudent(teacher)
    assert isinstance(teacher, PlainTeacher)
    return PlainStudent(teacher)
