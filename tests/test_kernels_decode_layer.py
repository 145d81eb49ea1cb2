"""A whole decode layer (kernels/decode_layer.py): the reference is the five per-op references it
composes; the Triton kernel, stage by stage and as one persistent launch (CPU interpreter, fp32),
equals it; on the GPU the persistent launch (tile queues) equals the staged launches bit for bit
and the per-op kernels within bf16 rounding, at Qwen2.5-0.5B and 3B shapes."""
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench.launch_capture import captured_launches

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # must precede the first import of a kernels.*_triton module
pytest.importorskip("triton", reason="triton is a test dependency (Linux)")

from deepretrieval.kernels.decode_attention import decode_attention_reference  # noqa: E402
from deepretrieval.kernels.decode_layer import (KERNEL_OPS, LAYER_SYNC_WORDS, LayerWeights, compose,  # noqa: E402
                                                decode_layer, decode_layer_reference, decode_layers,
                                                layer_kernel_mode)
import deepretrieval.kernels.decode_layer_triton as layer_triton  # noqa: E402
from deepretrieval.kernels.decode_layer_triton import (SHARED_MEMORY_BUDGET, LayerConfig,  # noqa: E402
                                                       decode_layer_triton, fit_shared_memory, layer_config_from_env,
                                                       pipeline_bytes)
from deepretrieval.kernels.fused_linear import fused_linear_reference  # noqa: E402
from deepretrieval.kernels.qkv_rope_cache import qkv_rope_cache_reference  # noqa: E402
from deepretrieval.kernels.rmsnorm import rmsnorm_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def inputs(B, C, F, H, H_kv, D, S, dtype, device, bias=True, seed=0):
    """(x, LayerWeights, eps, cos, sin, positions, [k_cache, v_cache], slot, kv_start, kv_end): rows
    with ragged left padding, the slot each row writes inside its visible range."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).to(device, dtype)

    w = LayerWeights(1 + 0.1 * t(C), t(H * D, C, scale=C ** -0.5), t(H_kv * D, C, scale=C ** -0.5),
                     t(H_kv * D, C, scale=C ** -0.5), t(C, H * D, scale=(H * D) ** -0.5), 1 + 0.1 * t(C),
                     t(F, C, scale=C ** -0.5), t(F, C, scale=C ** -0.5), t(C, F, scale=F ** -0.5),
                     (t(H * D), t(H_kv * D), t(H_kv * D)) if bias else None,
                     0.1 * t(C) if bias == "all" else None,
                     (0.1 * t(F), 0.1 * t(F), 0.1 * t(C)) if bias == "all" else None)
    angles = torch.arange(S)[:, None].double() * torch.rand(D // 2, generator=g).double()
    cos = torch.cat([angles.cos()] * 2, -1).float().to(device)
    sin = torch.cat([angles.sin()] * 2, -1).float().to(device)
    slot = S - 2
    kv_start = torch.randint(0, slot - 1, (B,), generator=g).to(device, torch.int32)
    kv_end = torch.full((B,), slot + 1, dtype=torch.int32, device=device)
    positions = (slot - kv_start).to(torch.long)
    caches = [t(B, H_kv, S, D) for _ in range(2)]
    return (t(B, C), w, 1e-6, cos, sin, positions, caches, torch.tensor([slot], device=device), kv_start, kv_end)


def call(fn, args, caches, **kw):
    x, w, eps, cos, sin, positions, _, slot, kv_start, kv_end = args
    return fn(x, w, eps, cos, sin, positions, caches[0], caches[1], slot, kv_start, kv_end, **kw)


def test_reference_is_the_five_op_references():
    args = inputs(3, 24, 40, 4, 2, 8, 12, torch.float32, "cpu", bias="all")
    x, w, eps, cos, sin, pos, (kc, vc), slot, start, end = args
    kc2, vc2 = kc.clone(), vc.clone()
    got = call(decode_layer_reference, args, (kc, vc))
    q = qkv_rope_cache_reference(x, (w.wq, w.wk, w.wv), w.qkv_bias, w.attn_norm, eps, cos, sin, pos, kc2, vc2, slot)
    attn = decode_attention_reference(q, kc2, vc2, start, end).flatten(1)
    h = fused_linear_reference(attn, (w.wo,), (w.o_bias,), residual=x)
    act = fused_linear_reference(h, (w.gate, w.up), w.mlp_bias[:2], norm_weight=w.mlp_norm, eps=eps, silu_mul=True)
    want = fused_linear_reference(act, (w.down,), w.mlp_bias[2:], residual=h)
    assert torch.equal(got, want) and torch.equal(kc, kc2) and torch.equal(vc, vc2)


@pytest.mark.parametrize("B,D,bias,splits,block_rows", [(3, 16, True, 1, 64), (20, 32, False, 1, 64),
                                                         (5, 16, "all", 3, 64), (20, 16, True, 2, 64),
                                                         (40, 16, True, 2, 16)])
def test_triton_stages_equal_reference_fp32(B, D, bias, splits, block_rows):
    """Staged launches (what the interpreter can run): GQA groups, with/without biases, the down
    projection whole or split along K (a split shorter than the others included), one row block or
    three (the last one partial)."""
    args = inputs(B, 48, 80, 6, 2, D, 24, torch.float32, DEVICE, bias=bias)
    caches_want = [c.clone() for c in args[6]]
    want = call(decode_layer_reference, args, caches_want)
    caches_got = [c.clone() for c in args[6]]
    got = call(decode_layer_triton, args, caches_got, persistent=False,
               config=LayerConfig((16, 16), (16, 32), (16, 16), (16, 32), down_splits=splits, block_rows=block_rows))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for a, b in zip(caches_got, caches_want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    others = [i for i in range(24) if i != args[7].item()]
    assert torch.equal(caches_got[0][:, :, others], args[6][0][:, :, others])   # only the slot is written


@pytest.mark.parametrize("splits", [1, 3])
def test_triton_layers_chained_by_their_norms_equal_reference_fp32(splits):
    """Three layers, each handing the next its input norm (`next_norm`; the next takes it as
    `normed` and skips its norm stage), equal three reference layers; the norm handed on equals
    RMSNorm of the output by the next layer's weight. The down projection whole (a rows stage of
    its own writes the norm) or split (the split sum writes it)."""
    layers = [inputs(20, 48, 80, 6, 2, 16, 24, torch.float32, DEVICE, bias="all", seed=seed) for seed in range(3)]
    x, _, eps, cos, sin, positions, _, slot, kv_start, kv_end = layers[0]
    weights = [args[1] for args in layers]
    config = LayerConfig((16, 16), (16, 32), (16, 16), (16, 32), down_splits=splits)
    want, got, normed = x, x, None
    for i, args in enumerate(layers):
        caches = [c.clone() for c in args[6]]
        want = decode_layer_reference(want, weights[i], eps, cos, sin, positions, *caches, slot, kv_start, kv_end)
        next_norm = weights[i + 1].attn_norm if i + 1 < len(layers) else None
        out = decode_layer_triton(got, weights[i], eps, cos, sin, positions, *[c.clone() for c in args[6]], slot,
                                  kv_start, kv_end, config=config, normed=normed, next_norm=next_norm)
        got, normed = out if next_norm is not None else (out, None)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        if next_norm is not None:
            torch.testing.assert_close(normed, rmsnorm_reference(got, next_norm, eps), atol=1e-5, rtol=1e-5)
    assert normed is None


@pytest.mark.parametrize("B,bias,splits,block_rows,chained", [(3, True, 1, 64, False), (5, "all", 3, 64, True),
                                                              (40, True, 2, 16, False), (20, "all", 1, 64, True)])
def test_persistent_queue_equals_staged_fp32(B, bias, splits, block_rows, chained):
    """The persistent launch (tile queues and done-counters instead of launches) gives the staged
    launches' bits, caches and handed-on norm included, twice in a row on one `sync`, which it leaves
    zeroed. Under the interpreter its programs run one after another, so the first takes every tile
    and each wait finds its tiles done (a count too high makes the launcher raise; one too low would
    only race on a GPU): this checks the tiles and the counts, not the races."""
    layers = [inputs(B, 48, 80, 6, 2, 16, 24, torch.float32, DEVICE, bias=bias, seed=seed) for seed in range(2)]
    config = LayerConfig((16, 16), (16, 32), (16, 16), (16, 32), down_splits=splits, block_rows=block_rows)
    sync = torch.zeros(LAYER_SYNC_WORDS, dtype=torch.int32, device=DEVICE)
    normed = rmsnorm_reference(layers[0][0], layers[0][1].attn_norm, 1e-6) if chained else None
    next_norm = layers[1][1].mlp_norm if chained else None
    runs = []
    for persistent, programs_per_sm in ((False, 1), (True, 1), (True, 3)):    # 3: programs that find no tile
        caches = [c.clone() for c in layers[0][6]]
        out = call(decode_layer_triton, layers[0], caches, persistent=persistent, sync=sync,
                   config=replace(config, programs_per_sm=programs_per_sm), normed=normed, next_norm=next_norm)
        runs.append((out if chained else (out,), caches))
        assert not sync.any()
    for outs, caches in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs + tuple(caches), runs[0][0] + tuple(runs[0][1])))
    with pytest.raises(ValueError, match=f"sync must be {LAYER_SYNC_WORDS} int32 zeros"):
        call(decode_layer_triton, layers[0], layers[0][6], persistent=True, sync=torch.zeros(2, dtype=torch.int32))


@pytest.mark.parametrize("B,block_rows,stages,items,chained", [
    (20, 64, (2, 4, 6, 7), 7, True), (40, 16, (6, 7), 5, True), (5, 64, (2, 4, 6), 1, False),
    (20, 64, (4,), 200, False)])
def test_stream_k_items_share_the_projections_fp32(B, block_rows, stages, items, chained):
    """Stream-K (`LayerConfig.stream_k`): the projections' (tile, K block) units shared by work
    items, a tile cut between items finished by the one holding its last K block. Here tiles of 2-3
    K blocks (q/k/v's last one partial) and 7 items cut tiles in two and in three (an item wholly
    inside a tile); 1 item runs every unit; 200 are more than the units (as many items as units).
    The down projection (stage 7) by stream-K instead of split-K, its stage-8 norm of the next
    layer (`chained`) then over whole rows. Staged and persistent give the same bits and the
    reference's values, and leave `sync` zeroed (each stored partial's flag reset by the item that
    adds it). A finishing item that found a partial not yet stored would make the launcher raise
    under the interpreter."""
    args = inputs(B, 48, 80, 6, 2, 16, 24, torch.float32, DEVICE, bias="all")
    next_norm = 1 + 0.1 * torch.randn(48, device=DEVICE) if chained else None
    want = call(decode_layer_reference, args, [c.clone() for c in args[6]])
    config = LayerConfig((16, 32), (16, 32), (16, 16), (16, 32), down_splits=None if 7 in stages else 2,
                         block_rows=block_rows, stream_k=stages, stream_k_items=items)
    sync = torch.zeros(LAYER_SYNC_WORDS, dtype=torch.int32, device=DEVICE)
    runs = []
    for persistent in (False, True):
        caches = [c.clone() for c in args[6]]
        out = call(decode_layer_triton, args, caches, persistent=persistent, sync=sync, config=config,
                   next_norm=next_norm)
        runs.append((out if chained else (out,), caches))
        assert not sync.any()
    (staged, staged_caches), (persistent, persistent_caches) = runs
    torch.testing.assert_close(staged[0], want, atol=1e-4, rtol=1e-4)
    if chained:
        torch.testing.assert_close(staged[1], rmsnorm_reference(staged[0], next_norm, 1e-6), atol=1e-5, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(staged + tuple(staged_caches), persistent + tuple(persistent_caches)))


def test_stream_k_config_errors():
    with pytest.raises(ValueError, match=r"stream_k=\(3,\): stages \(2, 4, 6, 7\) can share units"):
        LayerConfig(stream_k=(3,))
    with pytest.raises(ValueError, match=r"stages \[6\] in both stream_k and prefetch"):
        LayerConfig(stream_k=(2, 6), prefetch=(6, 7))
    with pytest.raises(ValueError, match="down_splits=2 with stage 7 in stream_k"):
        LayerConfig(stream_k=(7,), down_splits=2)
    with pytest.raises(ValueError, match="stream_k_items=0 must be 1 to 256"):
        LayerConfig(stream_k_items=0)


def test_decode_layers_is_decode_layer_after_decode_layer(monkeypatch):
    """The stack's dispatcher: off CUDA the per-op path layer by layer, each layer its own caches."""
    monkeypatch.delenv("DEEPRETRIEVAL_LAYER_KERNEL", raising=False)
    layers = [inputs(20, 16, 32, 4, 2, 16, 8, torch.float32, "cpu", seed=seed) for seed in range(2)]
    x, _, eps, cos, sin, positions, _, slot, kv_start, kv_end = layers[0]
    k_caches, v_caches = ([args[6][j].clone() for args in layers] for j in (0, 1))
    want = x
    for args in layers:
        want = decode_layer(want, args[1], eps, cos, sin, positions, *args[6], slot, kv_start, kv_end)
    got = decode_layers(x, [args[1] for args in layers], eps, cos, sin, positions, k_caches, v_caches, slot,
                        kv_start, kv_end)
    assert torch.equal(got, want)
    assert all(torch.equal(k, args[6][0]) and torch.equal(v, args[6][1])
               for k, v, args in zip(k_caches, v_caches, layers))


def test_triton_rejects_what_does_not_fit():
    args = inputs(2, 16, 32, 4, 2, 16, 8, torch.float32, DEVICE)
    x, w, *rest = args
    with pytest.raises(ValueError, match="decode_layer: weights"):
        call(decode_layer_triton, (x, w._replace(down=w.down[:, :8]), *rest), args[6])
    with pytest.raises(ValueError, match="give biases for all"):
        call(decode_layer_triton, (x, w._replace(qkv_bias=(w.qkv_bias[0], None, None)), *rest), args[6])


def test_tiles_are_shrunk_to_fit_shared_memory():
    """The default blocks are for bf16 at head_dim 64 (each stage's pipeline <= the budget, as run
    on an H100); head_dim 128 doubles the attention's K/V chunks, so its key block is halved; fp32
    doubles every chunk, so every K block over the budget is halved, and nothing else."""
    default = LayerConfig()
    assert fit_shared_memory(default, 64, 64, 2) == default
    assert fit_shared_memory(default, 64, 128, 2) == replace(default, attention_block=64)
    for head_dim in (64, 128):
        fp32 = fit_shared_memory(default, 64, head_dim, 4)
        assert max(pipeline_bytes(fp32, 64, head_dim, 4).values()) <= SHARED_MEMORY_BUDGET
        assert (fp32.qkv, fp32.o, fp32.gate_up, fp32.down) == ((16, 128), (16, 128), (64, 64), (32, 128))
        assert fp32.attention_block == (64 if head_dim == 64 else 32)
    assert pipeline_bytes(default, 64, 64, 2)["gate_up"] == 4 * (64 + 2 * 64) * 128 * 2     # stages x chunk
    with pytest.raises(ValueError, match="fit 1024 bytes of shared memory"):
        fit_shared_memory(default, 64, 64, 4, budget=1024)


def test_layer_config_from_the_environment(monkeypatch):
    """DEEPRETRIEVAL_LAYER_CONFIG changes the fields it names, and the launches take them: 16-row
    tiles (three row blocks of 40 rows), split-K 2, the prefetching stages as a bit mask."""
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_CONFIG", "block_rows=16  prefetch=3,7 down_splits=2 gate_up=32,64")
    assert layer_config_from_env() == replace(LayerConfig(), block_rows=16, prefetch=(3, 7), down_splits=2,
                                              gate_up=(32, 64))
    args = inputs(40, 48, 80, 6, 2, 16, 24, torch.float32, DEVICE)
    with captured_launches((layer_triton, "_decode_layer_kernel")) as captured:
        call(decode_layer_triton, args, args[6])
    launches = [(grid, kw) for _, grid, _, kw in captured]
    assert {(kw["BLOCK_B"], kw["DOWN_SPLITS"], kw["PREFETCH"], kw["BN_GATE_UP"]) for _, kw in launches} == {
        (16, 2, 2 ** 3 + 2 ** 7, 32)}
    assert dict((kw["STAGE"], grid) for grid, kw in launches)[6] == (3 * 3,)    # 3 row blocks x 3 tiles of 32 columns
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_CONFIG", "down_splits= prefetch=")
    assert layer_config_from_env() == LayerConfig()
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_CONFIG", "stream_k=2,4,6 stream_k_items=66")
    assert layer_config_from_env() == replace(LayerConfig(), stream_k=(2, 4, 6), stream_k_items=66)
    for bad in ("block_rows", "gate_up=64", "warps=8", "num_warps=x", "qkv=16,32,64"):
        monkeypatch.setenv("DEEPRETRIEVAL_LAYER_CONFIG", bad)
        with pytest.raises(ValueError, match=f"DEEPRETRIEVAL_LAYER_CONFIG: '{bad}' is not KEY=VALUE"):
            layer_config_from_env()
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_CONFIG", "prefetch=5")
    with pytest.raises(ValueError, match=r"prefetch=\(5,\): stages \(2, 3, 4, 6, 7\) can prefetch"):
        layer_config_from_env()
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_CONFIG", "programs_per_sm=0")
    with pytest.raises(ValueError, match="programs_per_sm=0 must be at least 1"):
        layer_config_from_env()


def test_kernels_compile_for_an_h100():
    """tests/hopper_compile.py, in a process of its own (this one may interpret the kernels):
    Triton compiles each stage of the layer kernel for sm_90 (default config; the down projection
    split in 4 and summed by a stage of its own; both as a layer inside a stack, whose last stage
    writes the next layer's norm; with the L2 prefetch, which every stage that reads weights or
    the cache issues before its PDL wait; and that config as one persistent launch, whose programs
    prefetch each tile they take after the wait; with the four projections by stream-K, staged
    (132 items each, with as many cp.async and wgmma instructions as the tiles' loops) and
    persistent), and decode attention, the sampler, the LM head + sampler and fused_linear, each
    within an H100's 227 KiB of shared memory."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, str(root / "tests" / "hopper_compile.py")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    stages = [line.split("stage ")[1].split(":")[0] for line in lines if "stage " in line]
    assert stages == list("1234567") + list("12345678") + list("2345678") * 3 + ["0"] + list("2345678") + ["0"]
    prefetches = [line.split(" prefetches")[0].split()[-3::2] for line in lines if "stage " in line]
    assert [stage for stage, (n, _) in zip(stages, prefetches) if n != "0"] == list("23467")   # the staged config's
    assert prefetches[-9][0] == "0" and int(prefetches[-9][1]) >= 5          # persistent: each tile's, after the wait
    stage_lines = [line.split("stage ")[1] for line in lines if "stage " in line]
    default, stream_k = stage_lines[1:7], stage_lines[-8:-2]        # stages 2-7: the first and last staged configs
    assert [stream_k[i].split(": ")[1].split(" programs")[0] for i in (0, 2, 4, 5)] == ["(132,)"] * 4
    for got, want in zip(stream_k, default):        # stream-K's items pipeline their K ranges as the tiles do
        assert got.split(" wgmma")[0].split(", ")[-2:] == want.split(" wgmma")[0].split(", ")[-2:], (got, want)
    assert [line.split(":")[0] for line in lines if "stage " not in line] == [
        "_attention_split_kernel", "_attention_reduce_kernel", "_sample_split_kernel", "_sample_reduce_kernel",
        "_rmsnorm_kernel", "_head_sample_tile_kernel", "_sample_reduce_kernel", "_fused_linear_kernel"]
    assert all(int(line.split(", ")[-1].split(" B")[0]) <= 227 * 1024 for line in lines)


def test_layer_kernel_mode(monkeypatch):
    """By default the layer kernel takes 17-64 rows; the variable overrides; a wrong value is an
    error. Off CUDA the dispatcher runs the per-op kernels (here the references) whatever the mode."""
    monkeypatch.delenv("DEEPRETRIEVAL_LAYER_KERNEL", raising=False)
    assert [layer_kernel_mode(rows) for rows in (1, 16, 17, 64, 65, 512)] == [None, None, "staged", "staged",
                                                                             None, None]
    for mode, want in (("", "staged"), ("auto", "staged"), ("off", None), ("persistent", "persistent")):
        monkeypatch.setenv("DEEPRETRIEVAL_LAYER_KERNEL", mode)
        assert layer_kernel_mode(40) == want and layer_kernel_mode(16) is None
    assert layer_kernel_mode(512) == "persistent"
    args = inputs(20, 16, 32, 4, 2, 16, 8, torch.float32, "cpu")
    want = call(decode_layer_reference, args, [c.clone() for c in args[6]])
    assert torch.equal(call(decode_layer, args, [c.clone() for c in args[6]]), want)
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_KERNEL", "fast")
    with pytest.raises(ValueError, match="DEEPRETRIEVAL_LAYER_KERNEL='fast'"):
        layer_kernel_mode(40)


@pytest.mark.gpu
@pytest.mark.parametrize("C,F,H,D", [(896, 4864, 14, 64), (2048, 11008, 16, 128)])   # Qwen2.5-0.5B, 3B
@pytest.mark.parametrize("B,dtype", [(32, torch.bfloat16), (64, torch.bfloat16), (200, torch.bfloat16),
                                     (64, torch.float32)])
def test_gpu_persistent_equals_stages_and_per_op_kernels(C, F, H, D, B, dtype, monkeypatch):
    """bf16 bounds: a few roundings (seen: max 0.031, mean 0.0025 at 0.5B, 32 rows); fp32: the
    tiles shrunk to fit shared memory, IEEE dots, agreement to fp32 accumulation order. The L2
    prefetch before the PDL wait is a hint: staged launches give the same bits with and without it.
    Two persistent programs a SM (two pipeline stages, so that both fit) give the staged bits too.
    Stream-K projections (one work item a SM) sum a cut tile's K ranges in another order: staged and
    persistent give the same bits, every launch (the same sum each time, the flags reset), within
    the same bounds of the per-op kernels."""
    args = inputs(B, C, F, H, 2, D, 320, dtype, "cuda")
    max_err, mean_err, cache_tol = (0.1, 5e-3, 0.05) if dtype == torch.bfloat16 else (1e-3, 1e-5, 1e-4)
    runs = {}
    for name, fn, kw in (("persistent", decode_layer_triton, dict(persistent=True)),
                         ("persistent, 2 a SM", decode_layer_triton,
                          dict(persistent=True, config=LayerConfig(programs_per_sm=2, num_stages=2))),
                         ("staged, 2 stages", decode_layer_triton, dict(config=LayerConfig(num_stages=2))),
                         ("staged", decode_layer_triton, dict(config=LayerConfig(prefetch=()))),
                         ("prefetch", decode_layer_triton, dict(config=LayerConfig(prefetch=(2, 3, 4, 6, 7)))),
                         ("stream-K", decode_layer_triton, dict(config=LayerConfig(stream_k=(2, 4, 6, 7)))),
                         ("stream-K, persistent", decode_layer_triton,
                          dict(persistent=True, config=LayerConfig(stream_k=(2, 4, 6, 7)))),
                         ("per_op", lambda *a: compose(KERNEL_OPS, *a), {}),
                         ("reference", decode_layer_reference, {})):
        caches = [c.clone() for c in args[6]]
        runs[name] = (call(fn, args, caches, **kw), caches)
    sync = torch.zeros(LAYER_SYNC_WORDS, dtype=torch.int32, device="cuda")
    for _ in range(3):                       # the queue state and stream-K's flags are reused across launches
        stream_k = LayerConfig(stream_k=(2, 4, 6, 7))
        for name, kw in (("persistent", dict(persistent=True)), ("stream-K", dict(config=stream_k)),
                         ("stream-K, persistent", dict(persistent=True, config=stream_k))):
            caches = [c.clone() for c in args[6]]
            assert torch.equal(call(decode_layer_triton, args, caches, sync=sync, **kw), runs[name][0]), name
            assert not sync.any()
    assert torch.equal(runs["stream-K"][0], runs["stream-K, persistent"][0])
    assert all(torch.equal(a, b) for a, b in zip(runs["stream-K"][1], runs["stream-K, persistent"][1]))
    out, caches = runs["persistent"]
    assert torch.equal(runs["persistent, 2 a SM"][0], runs["staged, 2 stages"][0])
    for same in ("staged", "prefetch"):
        assert torch.equal(out, runs[same][0]), same
        assert all(torch.equal(a, b) for a, b in zip(caches, runs[same][1])), same
    for mine in ("persistent", "stream-K"):
        for other in ("per_op", "reference"):    # cuBLAS / other accumulation orders
            (got, got_caches), (want, want_caches) = runs[mine], runs[other]
            err = (got.float() - want.float()).abs()
            assert err.max().item() < max_err and err.mean().item() < mean_err, (mine, other, err.max().item(),
                                                                                 err.mean().item())
            for a, b in zip(got_caches, want_caches):
                torch.testing.assert_close(a, b, atol=cache_tol, rtol=0.02)
    monkeypatch.setenv("DEEPRETRIEVAL_LAYER_KERNEL", "staged")        # the dispatcher, any row count
    assert torch.equal(call(decode_layer, args, [c.clone() for c in args[6]]), out)


@pytest.mark.gpu
@pytest.mark.parametrize("C,F,H,D", [(896, 4864, 14, 64), (2048, 11008, 16, 128)])   # Qwen2.5-0.5B, 3B
@pytest.mark.parametrize("persistent", [False, True])
def test_gpu_chained_layers_equal_layer_by_layer(C, F, H, D, persistent):
    """Two layers at 64 rows, bf16: handing the first layer's output norm to the second gives the
    bits of the second's own norm stage (the same jit function, `_rms_normalized`), caches included."""
    layers = [inputs(64, C, F, H, 2, D, 320, torch.bfloat16, "cuda", seed=seed) for seed in range(2)]
    x, _, eps, cos, sin, positions, _, slot, kv_start, kv_end = layers[0]
    weights = [args[1] for args in layers]

    def run(chained):
        caches = [[c.clone() for c in args[6]] for args in layers]
        h, normed = x, None
        for i in range(2):
            next_norm = weights[1].attn_norm if chained and i == 0 else None
            out = decode_layer_triton(h, weights[i], eps, cos, sin, positions, *caches[i], slot, kv_start, kv_end,
                                      persistent=persistent, normed=normed, next_norm=next_norm)
            h, normed = out if next_norm is not None else (out, None)
        return h, caches
    (want, want_caches), (got, caches) = run(False), run(True)
    assert torch.equal(got, want)
    assert all(torch.equal(a, b) for got_c, want_c in zip(caches, want_caches) for a, b in zip(got_c, want_c))
