"""The frozen visual teacher T: a torchvision CNN trunk that returns the feature maps the KD grains pair.

Feature lists are in teacher order: index 0 is the image itself, the last entry is the final
conv feature map (ResNet layer4 after its ReLU, VGG/AlexNet pool5), the map that the generator's m imitates.
The full ("layer") list per backbone:

- ResNet (Bottleneck): image, stem ReLU, maxpool, then per block (after conv1+bn+relu, after conv2+bn+relu,
  block output); resnet50 at 224 px gives 3 + 16*3 = 51 maps.
- ResNet (BasicBlock, resnet18): image, stem ReLU, maxpool, then per block (after conv1+bn+relu, block output).
- VGG19 / AlexNet: image, then the output of every ReLU and every max-pool of `features`.

The other grains are subsets: `model` = [image, last]; `block` = image plus every stage output (ResNet: stem,
maxpool, layer1..4; VGG/AlexNet: the last ReLU and the pool of each pooled stage); `image` = [image].
"""

from __future__ import annotations

import abc
import contextlib
import http.client
import socket
import typing
import urllib.error
from pathlib import Path

import torch
from torch import Tensor, nn

from ikd.errors import IkdError
from ikd.model.generator import Shape

if typing.TYPE_CHECKING:  # torchvision costs seconds to import; translation does not need it
    import torchvision

BACKBONES = ("resnet50", "resnet18", "vgg19", "alexnet")
GRAINS = ("model", "block", "layer", "image")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 20.0  # per socket operation: a dead network fails fast instead of hanging
_HEAD_PREFIXES = ("fc.", "classifier.", "avgpool.", "last_linear.")


def normalise_images(images: Tensor) -> Tensor:
    """uint8 [B,3,S,S] in 0..255 -> float [B,3,S,S], ImageNet mean/std normalised (on the images' device)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def check_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise IkdError(f"vision.backbone: unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")


def check_grain(grain: str) -> None:
    if grain not in GRAINS:
        raise IkdError(f"kd.grain: unknown grain {grain!r} (known: {', '.join(GRAINS)})")


class Teacher(nn.Module, abc.ABC):
    """Frozen CNN trunk, always in eval mode (BN running statistics, no dropout), gradients flow to the input only.

    Subclasses implement `_run(x, taps)`, which returns the layer-grain features whose index is in `taps`.
    Attribute names follow torchvision, so torchvision state dicts (minus the classifier head) load directly.
    """

    backbone: str
    image_size: int

    def __init__(self, backbone: str, image_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_size = image_size
        self._layer_shapes: list[Shape] = []
        self._block_indices: list[int] = []

    # -- structure -------------------------------------------------------------------------------------------
    def _finish(self) -> None:
        """Freeze, switch to eval, and record every feature's shape at `image_size` (shape-only meta run)."""
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)
        if any(t.device.type != "meta" for t in (*self.parameters(), *self.buffers())):
            self._layer_shapes = shape_teacher(self.backbone, self.image_size)._layer_shapes
        else:
            self._layer_shapes = feature_shapes_of(self, self.image_size)

    @abc.abstractmethod
    def _run(self, x: Tensor, taps: set[int]) -> list[Tensor]:
        """x [B,3,S,S] -> the layer-grain features whose index is in `taps`, in teacher order."""

    def grain_indices(self, grain: str) -> list[int]:
        """Indices into the layer-grain list that make up `grain`'s list."""
        check_grain(grain)
        n = len(self._layer_shapes)
        if grain == "image":
            return [0]
        if grain == "model":
            return [0, n - 1]
        if grain == "block":
            return list(self._block_indices)
        return list(range(n))

    def feature_shapes(self, grain: str = "layer") -> list[Shape]:
        """(C,H,W) of every feature that `forward(x, grain)` returns, at `image_size`."""
        return [self._layer_shapes[i] for i in self.grain_indices(grain)]

    @property
    def out_shape(self) -> Shape:
        """(C,H,W) of the final feature map (ResNet-50 at 224 px: (2048, 7, 7)); the shape of m."""
        return self._layer_shapes[-1]

    # -- behaviour -------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Teacher:
        """Ignore `mode`: the teacher never leaves eval mode (a parent's .train() must not flip its BN/dropout)."""
        return super().train(False)

    def forward(self, x: Tensor, grain: str = "model") -> list[Tensor]:
        """x: normalised images [B,3,S,S] -> the grain's feature list, [B,C_k,H_k,W_k] each (x itself first)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"teacher input must be [B,3,S,S], got {list(x.shape)}")
        idx = self.grain_indices(grain)
        if idx == [0]:
            return [x]
        feats = self._run(x, set(idx))
        assert len(feats) == len(idx)
        return feats


class ResNetTeacher(Teacher):
    """torchvision ResNet trunk (conv1 .. layer4); feature taps inside every block for the layer grain."""

    def __init__(self, backbone: str, net: torchvision.models.ResNet, image_size: int) -> None:
        from torchvision.models.resnet import Bottleneck  # here, not at the top: translation never imports it

        super().__init__(backbone, image_size)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        per_block = 3 if isinstance(self.layer1[0], Bottleneck) else 2
        self._block_indices = [0, 1, 2]
        n = 2
        for layer in self.layers():
            n += per_block * len(layer)
            self._block_indices.append(n)
        self._finish()

    def layers(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def _run(self, x: Tensor, taps: set[int]) -> list[Tensor]:
        tap = _Taps(taps)
        tap(x)
        x = self.relu(self.bn1(self.conv1(x)))
        tap(x)
        x = self.maxpool(x)
        tap(x)
        for layer in self.layers():
            for block in layer:
                x = _block_forward(block, x, tap)
        return tap.out


class _Taps:
    """Counts the features of the layer-grain list as they are computed and keeps those in `wanted`."""

    def __init__(self, wanted: set[int]) -> None:
        self.wanted, self.count, self.out = wanted, 0, []

    def __call__(self, t: Tensor) -> None:
        if self.count in self.wanted:
            self.out.append(t)
        self.count += 1


def _block_forward(block: nn.Module, x: Tensor, tap: _Taps) -> Tensor:
    """torchvision's BasicBlock/Bottleneck forward, tapping every conv activation and the block output."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    tap(out)
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        tap(out)
        out = block.bn3(block.conv3(out))
    elif isinstance(block, BasicBlock):
        out = block.bn2(block.conv2(out))
    else:  # pragma: no cover - torchvision resnets only have these two
        raise TypeError(type(block))
    out = block.relu(out + identity)
    tap(out)
    return out


class PlainTeacher(Teacher):
    """VGG / AlexNet `features` Sequential; taps after every ReLU and every max-pool."""

    def __init__(self, backbone: str, features: nn.Sequential, image_size: int) -> None:
        super().__init__(backbone, image_size)
        self.features = features
        self._block_indices = [0]
        n = 0
        last_relu = 0
        for module in features:
            if isinstance(module, (nn.ReLU, nn.MaxPool2d)):
                n += 1
                if isinstance(module, nn.ReLU):
                    last_relu = n
                else:
                    self._block_indices += [last_relu, n]
        self._finish()

    def _run(self, x: Tensor, taps: set[int]) -> list[Tensor]:
        out: list[Tensor] = []
        k = 0
        if 0 in taps:
            out.append(x)
        last = max(taps)
        for module in self.features:
            x = module(x)
            if isinstance(module, (nn.ReLU, nn.MaxPool2d)):
                k += 1
                if k in taps:
                    out.append(x)
                if k == last:
                    break
        return out


def feature_shapes_of(teacher: Teacher, image_size: int) -> list[Shape]:
    """Layer-grain (C,H,W) shapes of a meta-device `teacher` at `image_size` (shape propagation, no arithmetic)."""
    x = torch.empty(1, 3, image_size, image_size, device="meta")
    try:
        feats = teacher._run(x, set(range(1 << 12)))
    except RuntimeError as e:
        raise IkdError(
            f"vision.image_size: {image_size} px is too small for {teacher.backbone} "
            f"(the feature maps shrink to nothing: {str(e).splitlines()[0]})"
        ) from None
    shapes = [tuple(int(d) for d in f.shape[1:]) for f in feats]
    for s in shapes:
        if min(s[1:]) < 1:
            raise IkdError(f"vision.image_size: {image_size} px is too small for {teacher.backbone}")
    return shapes  # type: ignore[return-value]


# -- construction ----------------------------------------------------------------------------------------------
def _trunk(backbone: str, image_size: int, device: str | None = None) -> Teacher:
    """Randomly initialised teacher (torchvision's own init), or an uninitialised one on `device='meta'`."""
    import torchvision

    with torch.device(device) if device else contextlib.nullcontext():
        if backbone in ("resnet50", "resnet18"):
            return ResNetTeacher(backbone, torchvision.models.get_model(backbone, weights=None), image_size)
        if backbone == "vgg19":
            from torchvision.models import vgg

            features = vgg.make_layers(vgg.cfgs["E"], batch_norm=False)
            for m in features.modules():  # the init torchvision's VGG applies to its features
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.constant_(m.bias, 0)
            return PlainTeacher(backbone, features, image_size)
        if backbone == "alexnet":
            return PlainTeacher(backbone, torchvision.models.alexnet(weights=None).features, image_size)
    check_backbone(backbone)
    raise AssertionError(backbone)


def shape_teacher(backbone: str, image_size: int) -> Teacher:
    """A weightless (meta-device) teacher: structure and shapes only, for building the student."""
    check_backbone(backbone)
    return _trunk(backbone, image_size, device="meta")


def build_teacher(backbone: str = "resnet50", weights: str = "none", image_size: int = 224) -> Teacher:
    """The frozen, eval-mode teacher.

    weights: "none" (random init), a torchvision weights name of the backbone ("DEFAULT", "IMAGENET1K_V1", or
    "ResNet50_Weights.IMAGENET1K_V1"; downloaded by torchvision unless cached), or a local state-dict file
    (.pth/.pt; a torchvision checkpoint, with or without the classifier head).
    Raises IkdError for an unknown backbone or weights name, an image size the backbone cannot take, a
    failed download, or a state dict that does not fit.
    """
    check_backbone(backbone)
    if not isinstance(image_size, int) or image_size < 1:
        raise IkdError(f"vision.image_size: expected a positive integer, got {image_size!r}")
    shape_teacher(backbone, image_size)  # fails early, before any download, when the size does not work
    teacher = _trunk(backbone, image_size)
    if weights.lower() == "none":
        return teacher
    if _looks_like_path(weights):
        state = _load_local(Path(weights))
        source = weights
    else:
        state = _download(backbone, weights)
        source = f"torchvision {backbone} weights {weights}"
    _load_into(teacher, state, source)
    return teacher


def _looks_like_path(weights: str) -> bool:
    return weights.endswith((".pth", ".pt")) or "/" in weights or "\\" in weights or Path(weights).exists()


def _load_local(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise IkdError(f"vision.teacher_weights: {path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the same user error
        raise IkdError(f"vision.teacher_weights: {path}: not a PyTorch state-dict file ({e})") from None
    for key in ("state_dict", "model"):  # common wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise IkdError(f"vision.teacher_weights: {path}: expected a state dict (parameter name -> tensor)")
    return obj


def _download(backbone: str, name: str) -> dict[str, Tensor]:
    import torchvision

    enum = torchvision.models.get_model_weights(backbone)
    short = name.split(".")[-1]
    try:
        weights = enum.DEFAULT if short.upper() == "DEFAULT" else enum[short.upper()]
    except KeyError:
        known = ", ".join(["DEFAULT", *(w.name for w in enum), "none", "or a local .pth file"])
        raise IkdError(f"vision.teacher_weights: unknown weights {name!r} for {backbone} (known: {known})") from None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError, RuntimeError) as e:
        raise IkdError(
            f"vision.teacher_weights: could not download {weights} from {weights.url} ({e}); on a machine without "
            f"network, download that file elsewhere and pass its local path as vision.teacher_weights "
            f"(or put it in {torch.hub.get_dir()}/checkpoints/)"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def _load_into(teacher: Teacher, state: dict[str, Tensor], source: str) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    expected = teacher.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (e.g. {', '.join(wrong[:2])})")
        raise IkdError(
            f"vision.teacher_weights: {source} does not fit a {teacher.backbone} teacher: {'; '.join(parts)}"
        )
    teacher.load_state_dict(state, strict=True)
