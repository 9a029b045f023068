"""The CPU training path: the fused label-smoothed CE against PyTorch's own, the allocator setting, and what
train.amp means on a CPU."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from ikd.device import amp_dtype, cpu_has_native_bf16, keep_freed_host_memory
from ikd.train.loss import label_smoothed_ce, label_smoothed_ce_reference

PAD = 1


def _case(seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(3, 5, 37, generator=g)).to(dtype).requires_grad_()
    target = torch.randint(0, 37, (3, 5), generator=g)
    target[0, 3:] = PAD
    target[2, 1] = PAD
    return logits, target


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_fused_ce_value_and_gradient_equal_torch_cross_entropy(eps):
    logits, target = _case(1)
    loss, nll = label_smoothed_ce(logits, target, eps, PAD)
    (grad,) = torch.autograd.grad(2.5 * loss, logits)
    x = logits.detach().reshape(-1, 37).requires_grad_()
    want = F.cross_entropy(x, target.reshape(-1), ignore_index=PAD, label_smoothing=eps, reduction="sum")
    want_nll = F.cross_entropy(x.detach(), target.reshape(-1), ignore_index=PAD, reduction="sum")
    (want_grad,) = torch.autograd.grad(2.5 * want, x)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    assert float(nll) == pytest.approx(float(want_nll), rel=1e-6)
    assert not nll.requires_grad
    torch.testing.assert_close(grad.reshape(-1, 37), want_grad, rtol=1e-5, atol=1e-6)
    assert grad[0, 3:].abs().max() == 0 and grad[2, 1].abs().max() == 0  # pad positions get no gradient


def test_fused_ce_equals_the_reference_composition_and_keeps_the_logits_dtype():
    logits, target = _case(2, torch.bfloat16)
    loss, nll = label_smoothed_ce(logits, target, 0.1, PAD)
    (grad,) = torch.autograd.grad(loss, logits)
    ref, ref_nll = label_smoothed_ce_reference(logits, target, 0.1, PAD)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    assert float(nll) == pytest.approx(float(ref_nll), rel=1e-6)
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=1e-2, atol=1e-3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux only")
def test_freed_host_memory_is_kept_on_glibc():
    assert keep_freed_host_memory() is True
    assert keep_freed_host_memory() is True  # idempotent (once per process)


def test_amp_on_a_cpu_is_fp32_unless_bf16_is_asked_for():
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None  # the same numbers on every CPU
    assert amp_dtype("off", cpu) is None
    assert amp_dtype("fp16", cpu) is None
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    assert isinstance(cpu_has_native_bf16(), bool)
