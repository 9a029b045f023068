"""The multimodal feature generator F (paper eqs. 5-6): global text feature t -> m, shaped like the teacher's
last feature map. Part of the translator: it needs no CNN, only the map's shape."""

from __future__ import annotations

from torch import Tensor, nn

Shape = tuple[int, int, int]  # (C, H, W) of a feature map


def masked_mean(embedded: Tensor, pad_mask: Tensor) -> Tensor:
    """Mean of embedded [B,T,d] over the real tokens (pad_mask [B,T], True = pad) -> t [B,d] (eq. 5)."""
    keep = (~pad_mask).unsqueeze(-1).to(embedded.dtype)  # [B,T,1]
    count = keep.sum(dim=1).clamp_min(1.0)  # [B,1]; an all-pad row gives 0, not NaN
    return (embedded * keep).sum(dim=1) / count


class Generator(nn.Module):
    """t [B,d] -> Linear(d, C*H*W) -> view [B,C,H,W] -> BatchNorm2d(C) -> ReLU = m, shaped like the teacher's map.

    One linear map instead of the authors' Linear + 7x7 transposed conv: the same function class (two linear maps
    compose to one of rank <= d), 12.8M instead of 206M parameters for ResNet-50 (d=128, 2048x7x7).
    """

    def __init__(self, d_model: int, out_shape: Shape, device: str | None = None) -> None:
        """device "meta": weights without values, to be assigned from a checkpoint (no random init)."""
        super().__init__()
        c, h, w = out_shape
        self.out_shape: Shape = (int(c), int(h), int(w))
        self.fc = nn.Linear(d_model, c * h * w, device=device)
        self.bn = nn.BatchNorm2d(c, device=device)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, t: Tensor) -> Tensor:
        """t [B,d] -> m [B,C,H,W] (non-negative)."""
        m = self.fc(t).view(t.shape[0], *self.out_shape)
        return self.relu(self.bn(m))
