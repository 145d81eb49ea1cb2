"""SFT (cold start): `deepretrieval sft` on four chat traces takes a tiny random Llama (SmolLM2's
real tokenizer and chat template) from chance to greedily writing each trace's answer, think and
answer tags included; RL then starts from its export; the loss covers the answer only; a resumed
run equals a straight one; two torchrun processes equal one; LoRA SFT trains the adapters only;
bad traces name their line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import tiny_llama_dir
from deepretrieval.cli import main
from deepretrieval.model.chat_template import render_chat
from deepretrieval.model.sampler import SamplingParams, generate
from deepretrieval.policy import load_policy
from deepretrieval.rl.config import LoRAConfig, OptimConfig, SamplingConfig, SFTConfig
from deepretrieval.rl.interfaces import Prompt, RewardResult
from deepretrieval.rl.run_logging import read_jsonl
from deepretrieval.rl.sft import SFTTrainer, encode_trace, load_traces
from deepretrieval.rl.toy_task import toy_config
from deepretrieval.rl.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLAIMS = ["Vitamin D prevents fractures.", "Aspirin lowers stroke risk.", "Statins reduce LDL.",
          "Sleep improves memory."]


def trace(claim: str) -> dict:
    query = claim.rstrip(".").lower()
    return {"messages": [{"role": "system", "content": "You rewrite claims into search queries."},
                         {"role": "user", "content": f"Claim: {claim}"},
                         {"role": "assistant", "content": "<think>\nkey terms\n</think>\n"
                                                          f'<answer>{{"query": "{query}"}}</answer>'}]}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("sft") / "base")


@pytest.fixture(scope="module")
def sft_run(base, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft-run")
    data = tmp / "traces.jsonl"
    data.write_text("".join(json.dumps(trace(c)) + "\n" for c in CLAIMS))
    config = tmp / "sft.toml"
    config.write_text(f'[model]\nname = "{base}"\ndevice = "cpu"\n[sft]\nbatch_size = 4\n'
                      "micro_batch_size = 2\noptim = { lr = 1e-2, weight_decay = 0.0 }\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # as one_torch_thread, for this module-wide run
    try:
        assert main(["sft", "--config", str(config), "--data", str(data), "--run-dir", str(tmp / "run"),
                     "--json", "sft.epochs=80"]) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp / "run"


def test_encoding_supervises_the_answer_only(base):
    _, tok = load_policy(base)
    t = trace(CLAIMS[0])
    enc = encode_trace(t["messages"], tok, max_tokens=512)
    prompt = render_chat(t["messages"][:-1], "smollm2")       # ends with "<|im_start|>assistant\n"
    assert enc.prompt_ids == tok.encode(prompt)
    assert tok.decode(enc.response_ids) == t["messages"][-1]["content"] + "<|im_end|>"
    assert enc.response_ids[-1] in tok.stop_token_ids


def test_sft_learns_the_trace_format(sft_run):
    rows = read_jsonl(sft_run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 81))
    assert rows[0]["loss"] > 9.0                              # ~ln(49152) = 10.8: chance
    assert rows[-1]["loss"] < 0.05 * rows[0]["loss"]
    model, tok = load_policy(sft_run / "export")              # HF folder + tokenizer
    assert tok.chat_template == "smollm2"
    prompts = [tok.encode(render_chat(trace(c)["messages"][:-1], tok.chat_template)) for c in CLAIMS]
    out = generate(model, prompts, SamplingParams(max_new_tokens=40, temperature=0.0,
                                                  stop_token_ids=tuple(tok.stop_token_ids)),
                   pad_token_id=tok.pad_token_id)
    texts = [tok.decode(ids, skip_special_tokens=True) for ids in out.token_lists()]
    assert texts == [trace(c)["messages"][-1]["content"] for c in CLAIMS]
    assert out.finish_reasons == ["stop"] * 4
    from_run, _ = load_policy(sft_run)                        # the run's checkpoint: same weights
    assert all(torch.equal(a, b) for a, b in zip(from_run.state_dict().values(), model.state_dict().values()))


class ExactAnswer:
    """Reward 1 when the completion is the trace's answer."""

    def prompts(self):
        return [Prompt(messages=tuple(trace(c)["messages"][:-1]), meta={"want": trace(c)["messages"][-1]["content"]})
                for c in CLAIMS]

    def reward(self, prompts, completions, **meta):
        return RewardResult([float(c == p.meta["want"]) for p, c in zip(prompts, completions)])


def test_rl_starts_from_the_sft_export(sft_run, tmp_path):
    model, tok = load_policy(sft_run / "export")
    cfg = toy_config("grpo", total_steps=1, prompts_per_step=4, mini_batch_prompts=4, group_size=2,
                     sampling=SamplingConfig(max_new_tokens=40, temperature=1.0))
    trainer = Trainer(cfg, model, tok, ExactAnswer(), tmp_path, device="cpu")
    metrics = trainer.train_step()
    trainer.pool.close()
    assert metrics["reward/mean"] >= 0.75               # sampled at T=1, still mostly the trace


def _sft_trainer(base, data, run_dir, **overrides):
    model, tok = load_policy(base)
    cfg = SFTConfig(**{"batch_size": 2, "micro_batch_size": 1, "epochs": 3.0,
                       "optim": OptimConfig(lr=1e-2, weight_decay=0.0), **overrides})
    return SFTTrainer(cfg, model, tok, load_traces(data, tok, 512), run_dir, device="cpu")


def test_resume_equals_a_straight_run(base, tmp_path):
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(trace(c)) + "\n" for c in CLAIMS[:3]))   # odd: crosses epochs
    straight = _sft_trainer(base, data, tmp_path / "a")
    straight.fit()
    first = _sft_trainer(base, data, tmp_path / "b", checkpoint_every=2)
    first.total_steps = 2                                    # as if stopped after step 2
    first.fit()
    resumed = _sft_trainer(base, data, tmp_path / "b", checkpoint_every=2)
    resumed.fit(resume=True)
    assert resumed.step == straight.step == 5
    for k, v in straight.actor.state_dict().items():
        assert torch.equal(resumed.actor.state_dict()[k], v), k
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(("time/", "tokens_per_s"))} for r in rows]
    assert strip(read_jsonl(tmp_path / "a" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "b" / "metrics.jsonl"))


def test_lora_sft_trains_the_adapters_only(base, tmp_path):
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(trace(c)) + "\n" for c in CLAIMS))
    trainer = _sft_trainer(base, data, tmp_path / "run", lora=LoRAConfig(rank=8, alpha=16.0), epochs=5.0)
    before = {k: v.clone() for k, v in trainer.actor.state_dict().items()}
    trainer.fit()
    for k, v in trainer.actor.state_dict().items():
        assert torch.equal(v, before[k]) == (".lora_" not in k or k.endswith("lora_scale")), k
    # a random model's frozen embeddings and norms bound its logits (|h| |e_v| ~ 1), so adapters
    # alone move the loss a little from chance: a real but small decrease
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert losses[-1] < losses[0] - 0.3 and losses[0] > 10.5, losses


@pytest.mark.parametrize("line,message", [
    ("{not json", "t.jsonl:2: Expecting property name"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "t.jsonl:2: a trace needs at least one message"),
    ('{"prompt": "hi"}', 't.jsonl:2: expected {"messages"'),
    (json.dumps(trace("word " * 600)), r"t.jsonl:2: \d+ tokens > sft.max_tokens = 512"),
])
def test_bad_traces_name_their_line(base, tmp_path, line, message):
    _, tok = load_policy(base)
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps(trace(CLAIMS[0])) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_traces(data, tok, 512)


def test_cli_errors_are_one_line(base, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nname = "{base}"\ndevice = "cpu"\n')
    with pytest.raises(SystemExit, match="cannot read the traces: trace file .*missing.jsonl does not exist"):
        main(["sft", "--config", str(config), "--data", str(tmp_path / "missing.jsonl")])


def test_two_processes_match_one(base, tmp_path):
    """torchrun with 2 gloo processes (FSDP2, each rank its share of a batch): the same losses
    and weights as one process."""
    root = Path(__file__).resolve().parents[1]
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(trace(c)) + "\n" for c in CLAIMS))
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nname = "{base}"\ndevice = "cpu"\n[sft]\nbatch_size = 4\n'
                      "micro_batch_size = 1\nepochs = 2\noptim = { lr = 1e-3, weight_decay = 0.0 }\n")
    args = ["sft", "--config", str(config), "--data", str(data)]
    assert main(args + ["--run-dir", str(tmp_path / "one")]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           "-m", "deepretrieval", *args, "--run-dir", str(tmp_path / "two")],
                          capture_output=True, text=True, cwd=root, env={**env, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    one, two = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("one", "two"))
    assert [r["step"] for r in two] == [1, 2] and two[1]["loss"] < two[0]["loss"] - 0.1   # it trained
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5) and b["tokens"] == a["tokens"]
    p1, p2 = (load_file(tmp_path / d / "export" / "model.safetensors") for d in ("one", "two"))
    assert max((p1[k] - p2[k]).abs().max().item() for k in p1) <= 1e-5
