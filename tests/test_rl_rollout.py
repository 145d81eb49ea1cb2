"""Rollouts from the project's sampler: the log-probs it reports equal the trainer's
recomputation (fp32, 1e-5); the collated layout is [prompt | response | padding], packed to the
left, and its mask-free forward equals the left-padded masked one."""
import dataclasses

import torch

from deepretrieval.model.sampler import token_logprobs
from deepretrieval.model.transformer import Transformer
from deepretrieval.rl.config import SamplingConfig
from deepretrieval.rl.interfaces import Prompt
from deepretrieval.rl.models import ResponseModel
from deepretrieval.rl.rollout import collate, generate_rollouts
from deepretrieval.rl.toy_task import tiny_config


def _model(seed=0):
    cfg = dataclasses.replace(tiny_config(vocab_size=97), model_type="qwen2", qkv_bias=True,
                              hidden_size=96, num_heads=6, num_kv_heads=2, num_layers=3)
    torch.manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)          # peaked distributions: log-probs far from uniform
    return model.eval()


def _work(n=5):
    g = torch.Generator().manual_seed(1)
    return [(i, i, torch.randint(3, 97, (int(torch.randint(2, 9, (1,), generator=g)),),
                                 generator=g).tolist(), Prompt(text=f"p{i}")) for i in range(n)]


def test_sampler_logprobs_match_trainer_recompute_fp32():
    model = _model()
    for sampling in (SamplingConfig(max_new_tokens=12, temperature=1.0),
                     SamplingConfig(max_new_tokens=12, temperature=0.7, top_k=20, top_p=0.9)):
        samples, _, _ = generate_rollouts(model, _work(), group_size=3, sampling=sampling,
                                          chunk_prompts=2, pad_token_id=0, stop_token_ids=[1, 2],
                                          seed=0, step=1, decode=str, pool=None)
        assert len(samples) == 15 and len({len(s.response_ids) for s in samples}) > 1  # ragged
        b = collate(samples, ("sampler_logprobs",), 0, torch.device("cpu"))
        with torch.no_grad():
            out = ResponseModel(model)(b.input_ids, b.response_start, b.response_mask.shape[1],
                                          sampling.temperature)
        mask = b.response_mask.bool()
        diff = (out.logprobs - b.fields["sampler_logprobs"]).abs()[mask]
        assert diff.max().item() < 1e-5, diff.max().item()
        assert b.fields["sampler_logprobs"][mask].min() < -0.5   # non-trivial log-probs compared


def test_collate_layout_and_seeded_chunks():
    model = _model()
    sampling = SamplingConfig(max_new_tokens=6)
    args = dict(group_size=2, sampling=sampling, pad_token_id=0, stop_token_ids=[1],
                decode=str, pool=None, seed=7, step=3)
    a, _, _ = generate_rollouts(model, _work(4), chunk_prompts=2, **args)
    # the chunk [2, 3] alone (as a second rank would generate it) gives the same completions
    b, _, _ = generate_rollouts(model, _work(4)[2:], chunk_prompts=2, **args)
    assert [s.response_ids for s in a[4:]] == [s.response_ids for s in b]
    batch = collate(a[:3], (), 0, torch.device("cpu"))
    T = batch.input_ids.shape[1]
    for i, s in enumerate(a[:3]):
        p, r = len(s.prompt_ids), len(s.response_ids)
        assert batch.input_ids[i].tolist() == s.prompt_ids + s.response_ids + [0] * (T - p - r)
        assert batch.response_start[i].item() == p
        assert batch.response_mask[i].sum().item() == r


def test_packed_rows_equal_the_left_padded_masked_forward():
    """collate packs rows to the left and the trainer runs them with no attention mask; the
    log-probs equal those of the same sequences left-padded under the full padding mask."""
    model = _model()
    samples, _, _ = generate_rollouts(model, _work(), group_size=3, sampling=SamplingConfig(max_new_tokens=10),
                                      chunk_prompts=5, pad_token_id=0, stop_token_ids=[1, 2], seed=0, step=1,
                                      decode=str, pool=None)
    assert len({len(s.prompt_ids) for s in samples}) > 1 and len({len(s.response_ids) for s in samples}) > 1
    b = collate(samples, (), 0, torch.device("cpu"))
    R = b.response_mask.shape[1]
    with torch.no_grad():
        packed = ResponseModel(model)(b.input_ids, b.response_start, R, 0.7)
        P = max(len(s.prompt_ids) for s in samples)
        for i, s in enumerate(samples):                               # left-padded, masked, one row
            ids = torch.tensor([[0] * (P - len(s.prompt_ids)) + s.prompt_ids + s.response_ids])
            mask = (torch.arange(ids.shape[1]) >= P - len(s.prompt_ids)).long()[None]
            logits = model(ids, mask)[0, P - 1:-1] / 0.7
            want = token_logprobs(logits, ids[0, P:], 1.0)
            r = len(s.response_ids)
            torch.testing.assert_close(packed.logprobs[i, :r], want, rtol=0, atol=2e-6)
