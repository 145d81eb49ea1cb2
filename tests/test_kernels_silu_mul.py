"""silu_mul: reference vs transformers' Qwen2MLP; Triton kernel vs reference.

On CPU the kernel runs in Triton's interpreter (fp32, small shapes); on a GPU at Qwen2.5 shapes.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.silu_mul import silu_mul, silu_mul_reference  # noqa: E402
from deepretrieval.kernels.silu_mul_triton import silu_mul_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _gate_up(rows: int, F: int, dtype, device, seed=0) -> torch.Tensor:
    """[rows, 2F]: a gate/up projection's output laid side by side, gate first."""
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(rows, 2 * F, generator=g)).to(device, dtype)


def test_reference_is_transformers_qwen2_mlp_gating_bf16():
    from transformers import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP
    torch.manual_seed(0)
    mlp = Qwen2MLP(Qwen2Config(hidden_size=32, intermediate_size=48)).to(torch.bfloat16)
    x = torch.randn(3, 5, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        ours = mlp.down_proj(silu_mul_reference(mlp.gate_proj(x), mlp.up_proj(x)))
        torch.testing.assert_close(ours, mlp(x), atol=0, rtol=0)


@pytest.mark.parametrize("rows,F", [(3, 40), (2, 1500), (1, 7)])      # 1500: two column blocks
def test_triton_equals_reference_fp32_on_strided_halves(rows, F):
    gate, up = _gate_up(rows, F, torch.float32, DEVICE, seed=F).chunk(2, dim=-1)   # views, row stride 2F
    got = silu_mul_triton(gate, up)
    assert got.shape == (rows, F) and got.is_contiguous()
    torch.testing.assert_close(got, silu_mul_reference(gate, up), atol=1e-6, rtol=1e-6)


def test_triton_keeps_leading_dims():
    gate, up = _gate_up(6, 24, torch.float32, DEVICE).view(2, 3, 48).chunk(2, dim=-1)
    torch.testing.assert_close(silu_mul_triton(gate, up), silu_mul_reference(gate, up), atol=1e-6, rtol=1e-6)


def test_triton_rejects_mismatched_halves():
    gate, up = _gate_up(2, 32, torch.float32, DEVICE).chunk(2, dim=-1)
    with pytest.raises(ValueError, match="must match"):
        silu_mul_triton(gate, up[:, :16])


def test_dispatcher_keeps_autograd_through_the_reference():
    gate, up = _gate_up(2, 32, torch.float32, DEVICE).chunk(2, dim=-1)
    gate = gate.detach().requires_grad_(True)
    silu_mul(gate, up).sum().backward()             # the Triton kernel has no backward
    assert gate.grad is not None and torch.isfinite(gate.grad).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("F", [4864, 11008])                       # Qwen2.5-0.5B, 3B
@pytest.mark.parametrize("rows", [1, 64, 128])
def test_triton_equals_reference_gpu(dtype, F, rows):
    gate, up = _gate_up(rows, F, dtype, "cuda", seed=rows + F).chunk(2, dim=-1)
    with torch.no_grad():
        got = silu_mul(gate, up)                                   # dispatches to Triton
    want = silu_mul_reference(gate, up)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(got, want, **tol)
