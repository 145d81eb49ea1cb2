"""bench/kernels.py's one-stage replay on CPU (the Triton interpreter runs the layer kernel): the
gate/up stage's launch, captured from a layer call on each layer copy, recomputes that copy's
gate/up output alone, copy after copy, from the inputs the stages before it left; the decode_layer
case builds those baselines with their bytes. The timings themselves need a GPU
(`python -m bench.kernels --only decode_layer`)."""
import functools
import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from bench.kernels import _in_turn, _stage_launches  # noqa: E402
from deepretrieval.kernels.decode_layer_triton import LayerConfig, decode_layer_triton  # noqa: E402
from test_kernels_decode_layer import DEVICE, inputs  # noqa: E402


@pytest.mark.parametrize("stream_k", [(), (2, 4, 6, 7)])
def test_one_stage_replays_alone_copy_after_copy(stream_k):
    copies = [inputs(20, 48, 80, 6, 2, 16, 24, torch.float32, DEVICE, seed=seed) for seed in range(2)]
    config = LayerConfig((16, 16), (16, 32), (16, 16), (16, 32), stream_k=stream_k, stream_k_items=5)
    calls = [functools.partial(decode_layer_triton, x, w, eps, cos, sin, positions, *caches, slot, kv_start, kv_end,
                               config=config)
             for x, w, eps, cos, sin, positions, caches, slot, kv_start, kv_end in copies]
    launches = _stage_launches(6, calls)
    assert [kw["STAGE"] for _, _, _, kw in launches] == [6, 6]
    names = launches[0][0].arg_names
    hn, act = ([args[names.index(name)] for _, _, args, _ in launches] for name in ("hn_ptr", "act_ptr"))
    for i, (_, w, *_) in enumerate(copies):           # the layer ran once: act is gate/up of its hn
        torch.testing.assert_close(act[i], F.silu(hn[i] @ w.gate.T) * (hn[i] @ w.up.T), atol=1e-5, rtol=1e-5)
    want = [a.clone() for a in act]
    for a in act:
        a.zero_()
    launch = _in_turn(launches)
    launch()
    assert torch.equal(act[0], want[0]) and not act[1].any()
    launch()
    assert torch.equal(act[1], want[1])


def test_decode_layer_case_times_each_stage_alone(monkeypatch):
    """The decode_layer case's stage-alone baselines at a tiny shape: the projections and the
    attention, default and stream-K, each with the bytes it must move, built from one layer call
    per weight copy (one of them run here: the interpreter is slow)."""
    import types

    from bench import kernels
    monkeypatch.setitem(kernels.MODELS, "tiny", dict(hidden=48, H_q=6, H_kv=2, D=16, ffn=80))
    monkeypatch.setattr(kernels, "DEVICE", torch.device(DEVICE))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _: types.SimpleNamespace(L2_cache_size=1))
    asked = []

    def stage_launches(stage, calls):
        asked.append((stage, len(calls)))
        return [calls]
    monkeypatch.setattr(kernels, "_stage_launches", stage_launches)
    monkeypatch.setattr(kernels, "_in_turn", lambda launches: launches[0][0])
    case = kernels._decode_layer_case("tiny", 17)
    stages = [f"stage {stage} alone{name}" for name in ("", ", stream-K") for stage in (2, 3, 4, 6, 7)]
    assert list(case.part_bytes) == stages and set(stages) <= set(case.baselines)
    assert asked == [(stage, 1) for stage in (2, 3, 4, 6, 7)] * 2                # one weight copy here
    w = torch.tensor([], dtype=torch.bfloat16).element_size()
    assert case.part_bytes["stage 6 alone"] == 2 * 80 * 48 * w                  # gate and up
    assert case.part_bytes["stage 3 alone"] == 2 * 17 * 2 * 512 * 16 * w           # K and V, 17 rows, 512 keys
    monkeypatch.setattr(torch, "bfloat16", torch.float32)          # the interpreter's dots are fp32
    case = kernels._decode_layer_case("tiny", 17)
    torch.testing.assert_close(case.baselines["stage 6 alone, stream-K"](), case.baselines["stage 6 alone"]())
