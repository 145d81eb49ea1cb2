"""LoRA on the policy: training moves the adapters only (the base, which doubles as the reference,
stays bit-identical); a fresh adapter (B = 0) gives exactly full fine-tuning's first step; the
merged export loads in transformers with the adapted model's logits, and so does the run's
checkpoint through load_policy. The merge and the frozen-base switch are checked by hand."""
import pytest
import torch

from cli_helpers import tiny_llama_dir
from deepretrieval.policy import RUN_CONFIG, load_policy
from deepretrieval.rl.config import LoRAConfig
from deepretrieval.rl.lora import LoRALinear, adapters_disabled, apply_lora, merge_lora_state, merged_copy
from deepretrieval.rl.run_logging import read_jsonl
from deepretrieval.rl.toy_task import CharTokenizer, TargetCharTask, tiny_model, toy_config
from deepretrieval.rl.trainer import Trainer
from deepretrieval.run_config import ModelSection, RunConfig, write_resolved

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LORA = LoRAConfig(rank=4, alpha=8.0)


def test_adapter_maths_by_hand():
    torch.manual_seed(0)
    lm = tiny_model(0)
    x = torch.randint(0, 28, (2, 7))
    base = lm(x)
    names = apply_lora(lm, LoRAConfig(rank=2, alpha=6.0, target_modules=("q_proj", "down_proj")))
    assert names == ["layers.0.attn.wq", "layers.0.mlp.down", "layers.1.attn.wq", "layers.1.mlp.down"]
    assert torch.equal(lm(x), base)                                 # B = 0: nothing changes
    assert [n for n, p in lm.named_parameters() if p.requires_grad] == \
        [f"{n}.lora_{m}" for n in names for m in "AB"]
    wq = lm.layers[0].attn.wq
    with torch.no_grad():
        wq.lora_B.normal_()
    h = torch.randn(3, 64)
    want = h @ wq.weight.T + 3.0 * (h @ wq.lora_A.T) @ wq.lora_B.T      # scale = alpha / rank = 3
    torch.testing.assert_close(wq(h), want)
    with adapters_disabled(lm):
        torch.testing.assert_close(lm(x), base, rtol=0, atol=0)
    assert not torch.equal(lm(x), base)
    merged = merge_lora_state(lm.state_dict())
    assert not any("lora" in k for k in merged)
    torch.testing.assert_close(merged["layers.0.attn.wq.weight"],
                               wq.weight + 3.0 * wq.lora_B @ wq.lora_A)
    assert torch.equal(merged["layers.0.attn.wk.weight"], lm.layers[0].attn.wk.weight)
    plain = merged_copy(lm)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    torch.testing.assert_close(plain(x), lm(x), rtol=1e-5, atol=1e-6)


def test_first_step_equals_full_finetuning(tmp_path):
    """Adapters start at B = 0: the samples, log-probs, reference and every loss term of step 1
    (one optimiser step: the loss before any update) are those of full fine-tuning, bit for bit
    (the reference is the frozen base either way)."""
    steps = []
    for lora in (LoRAConfig(), LORA):
        cfg = toy_config("grpo", total_steps=1, lora=lora, entropy_coef=0.01, mini_batch_prompts=16)
        trainer = Trainer(cfg, tiny_model(0), CharTokenizer(), TargetCharTask(), tmp_path, device="cpu")
        steps.append(trainer.train_step())
        trainer.pool.close()
    full, lora = steps
    for key in ("loss/policy", "loss/kl", "loss/entropy", "kl", "entropy", "clip_frac", "approx_kl",
                "reward/mean", "response_length/mean", "logprob_diff/max"):
        assert lora[key] == full[key], (key, lora[key], full[key])
    assert full["loss/policy"] != 0.0 and full["loss/entropy"] > 3.0
    assert lora["grad_norm"] != full["grad_norm"]        # different parameters were trained


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """3 LoRA GRPO steps on a tiny Llama with SmolLM2's tokenizer, as a run directory."""
    tmp = tmp_path_factory.mktemp("lora")
    base_dir = tiny_llama_dir(tmp / "base")
    run_dir = tmp / "run"
    write_resolved(RunConfig(model=ModelSection(name=str(base_dir))), run_dir, RUN_CONFIG)
    model, tok = load_policy(base_dir)
    cfg = toy_config("grpo", total_steps=3, lora=LORA, checkpoint_every=2, prompts_per_step=8, group_size=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # as one_torch_thread, for this module-wide run
    try:
        trainer = Trainer(cfg, model, tok, TargetCharTask(), run_dir, device="cpu")
        base = {k: v.clone() for k, v in trainer.actor.lm.state_dict().items()}
        trainer.fit()
        trainer.export(run_dir / "export")
    finally:
        torch.set_num_threads(threads)
    return trainer, base, run_dir


def test_training_moves_only_the_adapters(lora_run):
    trainer, base, run_dir = lora_run
    after = trainer.actor.lm.state_dict()
    adapters = {k for k in after if ".lora_" in k and not k.endswith("lora_scale")}
    assert len(adapters) == 2 * 2 * 7                    # A and B, 2 layers, 7 target modules
    for k, v in after.items():
        moved = not torch.equal(v, base[k])
        assert moved == (k in adapters), k
    assert all(after[k].abs().max() > 0 for k in adapters if k.endswith("lora_B"))
    trained = {id(p) for g in trainer.actor_opt.param_groups for p in g["params"]}
    assert trained == {id(p) for n, p in trainer.actor.lm.named_parameters() if ".lora_" in n}
    assert list(trainer.reference.parameters()) == []    # the reference owns no weights
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 0    # the policy left its frozen base


def test_merged_export_loads_in_transformers(lora_run):
    import transformers
    trainer, base, run_dir = lora_run
    theirs = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "export", dtype=torch.float32).eval()
    ours = trainer.actor.lm.eval()                       # adapted: W x + scale * B A x
    x = torch.randint(0, 49152, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ours(x)
        torch.testing.assert_close(theirs(x).logits, want, rtol=1e-4, atol=1e-5)
        with adapters_disabled(ours):
            assert (ours(x) - want).abs().max() > 1e-4   # the adapters matter in these logits
        reloaded, _ = load_policy(run_dir)               # the checkpoint (base + adapters), merged
        torch.testing.assert_close(reloaded(x), want, rtol=1e-4, atol=1e-5)
