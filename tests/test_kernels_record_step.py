"""End-of-step bookkeeping (kernels/record_step.py): the reference on a worked example, the Triton
kernel equal to it (CPU interpreter here; on the GPU at rollout batch sizes)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.record_step import record_step, record_step_reference  # noqa: E402
from deepretrieval.kernels.record_step_triton import record_step_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PAD = 0


def state(B, N, S, device, seed=0):
    """Outputs part-way through decoding: some rows done, step at column 2."""
    g = torch.Generator().manual_seed(seed)
    out_tokens = torch.randint(1, 50, (B, N), generator=g)
    out_logprobs = -torch.rand(B, N, generator=g)
    lengths = torch.randint(0, 3, (B,), generator=g)
    done = torch.rand(B, generator=g) < 0.3
    step = torch.tensor([2])
    stops = torch.arange(10, 10 + S)
    ids = torch.randint(5, 15, (B,), generator=g)            # some hit the stops 10..10+S
    logprobs = -torch.rand(B, generator=g)
    return [t.to(device) for t in (ids, logprobs, out_tokens, out_logprobs, lengths, done, step, stops)]


def test_reference_worked_example():
    ids, logprobs = torch.tensor([11, 7, 3]), torch.tensor([-0.5, -1.0, -2.0])
    out_tokens, out_logprobs = torch.full((3, 4), 9), torch.full((3, 4), -9.0)
    lengths, done, step, stops = torch.tensor([1, 1, 0]), torch.tensor([False, False, True]), \
        torch.tensor([1]), torch.tensor([11, 3])
    last, slot = torch.zeros(3, dtype=torch.long), torch.tensor([40])
    positions = torch.tensor([5, 6, 7], dtype=torch.int32)
    record_step_reference(ids, logprobs, out_tokens, out_logprobs, lengths, done, step, stops, PAD,
                          last_tokens=last, bump=(slot, positions))
    assert out_tokens[:, 1].tolist() == [11, 7, PAD]         # row 2 was done: padding
    assert out_logprobs[:, 1].tolist() == [-0.5, -1.0, 0.0]
    assert (out_tokens[:, [0, 2, 3]] == 9).all()              # other columns untouched
    assert lengths.tolist() == [2, 2, 0]
    assert done.tolist() == [True, False, True]               # 11 stops row 0; 3 comes too late for row 2
    assert step.tolist() == [2] and last.tolist() == [11, 7, 3]
    assert slot.tolist() == [41] and positions.tolist() == [6, 7, 8] and positions.dtype == torch.int32


def _run_both(B, N, S, device, with_extras):
    want = state(B, N, S, device)
    got = [t.clone() for t in want]
    extras_w = extras_g = {}
    if with_extras:
        def extras():
            return dict(last_tokens=torch.zeros(B, dtype=torch.long, device=device),
                        bump=(torch.tensor([7], device=device), torch.arange(B, device=device),
                              torch.arange(B, dtype=torch.int32, device=device)))
        extras_w, extras_g = extras(), extras()
    record_step_reference(*want, PAD, **extras_w)
    record_step_triton(*got, PAD, **extras_g)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    if with_extras:
        assert torch.equal(extras_g["last_tokens"], extras_w["last_tokens"])
        for a, b in zip(extras_g["bump"], extras_w["bump"]):
            assert torch.equal(a, b) and a.dtype == b.dtype


@pytest.mark.parametrize("B,S,with_extras", [(1, 1, True), (5, 3, True), (6, 0, False)])
def test_triton_equals_reference(B, S, with_extras):
    _run_both(B, 4, S, DEVICE, with_extras)


def test_rejects_float_counters():
    args = state(2, 3, 1, DEVICE)
    with pytest.raises(ValueError, match="integer tensors to bump"):
        record_step(*args, PAD, bump=(torch.zeros(1, device=DEVICE),))


@pytest.mark.gpu
@pytest.mark.parametrize("B", [1, 64, 1500])                  # 1500: more rows than one block
def test_triton_equals_reference_gpu(B):
    _run_both(B, 512, 2, "cuda", True)
