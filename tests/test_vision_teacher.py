"""Teacher: frozen, always eval, torchvision-equivalent, weights from a local file / none / a name (clear errors)."""

from __future__ import annotations

import socket
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from ikd.errors import IkdError
from ikd.model.vision import IMAGENET_MEAN, IMAGENET_STD, build_teacher, normalise_images
from ikd.model.vision import teacher as teacher_mod


def test_frozen_and_always_eval() -> None:
    teacher = build_teacher("resnet18", "none", 32)
    parent = nn.ModuleDict({"teacher": teacher, "other": nn.BatchNorm2d(3)})
    parent.train()
    assert parent["other"].training
    assert not any(m.training for m in teacher.modules())
    assert teacher.train() is teacher and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    first = teacher(x, "model")[-1]
    assert torch.equal(teacher(x, "model")[-1], first)  # running stats: deterministic, batch-independent
    assert torch.allclose(teacher(x[:1], "model")[-1], first[:1], atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN stats untouched


def test_matches_torchvision_forward() -> None:
    net = torchvision.models.resnet18(weights=None).eval()
    teacher = build_teacher("resnet18", "none", 64)
    teacher.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 64, 64)
    trunk = nn.Sequential(*list(net.children())[:-2])
    with torch.no_grad():
        assert torch.allclose(teacher(x, "model")[-1], trunk(x), atol=1e-5)
        assert torch.allclose(teacher(x, "block")[3], trunk[:5](x), atol=1e-5)  # layer1 output

    vgg = build_teacher("vgg19", "none", 32)
    with torch.no_grad():
        assert torch.allclose(vgg(x[:, :, :32, :32], "model")[-1], vgg.features(x[:, :, :32, :32]))


def test_local_weights_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = torchvision.models.resnet18(weights=None)  # a full torchvision checkpoint, classifier included
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    teacher = build_teacher("resnet18", str(path), 32)
    assert torch.equal(teacher.conv1.weight, net.conv1.weight)
    assert torch.equal(teacher.layer4[1].bn2.running_var, net.layer4[1].bn2.running_var)
    assert not any(p.requires_grad for p in teacher.parameters())
    # the teacher's own state dict (no head, DataParallel prefix) loads too
    again = tmp_path / "teacher.pt"
    torch.save({f"module.{k}": v for k, v in teacher.state_dict().items()}, again)
    reloaded = build_teacher("resnet18", str(again), 32)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), teacher.state_dict().values()))


def test_local_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(IkdError, match=r"teacher_weights: .*missing\.pth: file not found"):
        build_teacher("resnet18", str(tmp_path / "missing.pth"), 32)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(IkdError, match="junk.pth: not a PyTorch state-dict file"):
        build_teacher("resnet18", str(junk), 32)
    other = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), other)
    with pytest.raises(IkdError, match=r"alexnet\.pth does not fit a resnet18 teacher: \d+ missing .*unexpected"):
        build_teacher("resnet18", str(other), 32)
    wide = tmp_path / "resnet34.pth"
    state = build_teacher("resnet18", "none", 32).state_dict()
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    torch.save(state, wide)
    with pytest.raises(IkdError, match=r"1 of another shape \(e\.g\. conv1\.weight \(32, 3, 7, 7\) != \(64, 3, 7, 7\)"):
        build_teacher("resnet18", str(wide), 32)


def test_none_gives_random_weights() -> None:
    torch.manual_seed(1)
    a = build_teacher("resnet18", "none", 32)
    torch.manual_seed(2)
    b = build_teacher("resnet18", "none", 32)
    assert a.conv1.weight.std() > 0.01
    assert not torch.equal(a.conv1.weight, b.conv1.weight)


def test_unknown_weights_name() -> None:
    with pytest.raises(IkdError, match=r"unknown weights 'IMAGENET9K' for resnet18 \(known: DEFAULT, IMAGENET1K_V1"):
        build_teacher("resnet18", "IMAGENET9K", 32)


@pytest.mark.parametrize("failure", [urllib.error.URLError("no network"), TimeoutError("timed out")])
def test_download_failure_is_quick_clear_error(monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    seen: list[float | None] = []

    def fake_download(url: str, *args: object, **kwargs: object) -> dict:
        seen.append(socket.getdefaulttimeout())
        raise failure

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    before = socket.getdefaulttimeout()
    with pytest.raises(IkdError, match=r"could not download .*resnet18-f37072fd\.pth.*pass its local path"):
        build_teacher("resnet18", "IMAGENET1K_V1", 32)
    assert seen == [teacher_mod.DOWNLOAD_TIMEOUT_S]
    assert socket.getdefaulttimeout() == before


def test_named_weights_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(5)
    net = torchvision.models.resnet18(weights=None)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", lambda url, **kw: net.state_dict())
    teacher = build_teacher("resnet18", "DEFAULT", 32)
    assert torch.equal(teacher.layer3[0].conv2.weight, net.layer3[0].conv2.weight)


def test_normalise_images_by_hand() -> None:
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = normalise_images(images)
    for c in range(3):
        assert out[0, c, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], rel=1e-6)
        assert out[1, c, 1, 1].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rel=1e-6)
