"""Experiment configs (configs/*.toml) and their loader (deepretrieval/run_config.py)."""
from pathlib import Path

import pytest

from deepretrieval.run_config import ConfigError, config_from_dict, load_config, write_resolved
from deepretrieval.tasks.registry import build_task

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
EXPERIMENTS = [p for p in CONFIGS if not p.name.startswith("_")]
MINIMAL = {"task": {"family": "classic_ir", "data": "x"}}


def test_the_papers_experiments_are_all_there():
    names = {p.stem for p in EXPERIMENTS}
    for need in ("pubmed", "ctgov", "nq", "triviaqa", "squad", "spider", "bird", "demo",
                 "scifact_bm25", "scifact_dense", "nfcorpus_bm25", "nfcorpus_dense", "fever_bm25",
                 "fever_dense", "hotpotqa_bm25", "hotpotqa_dense", "msmarco_health_bm25",
                 "msmarco_science_dense", "msmarco_tech_bm25", "pubmed_grpo"):
        assert need in names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_config_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.run.out_dir.startswith("runs/")
    if cfg.rl.algorithm == "ppo":               # the paper's recipe, inherited from _paper_ppo.toml
        assert (cfg.rl.actor_optim.lr, cfg.rl.critic_optim.lr, cfg.rl.kl_coef, cfg.rl.entropy_coef) == \
            (1e-6, 1e-5, 0.001, 0.001)
        batch = {"msmarco_beir_bm25": (512, 128)}.get(path.stem, (64, 16))    # msmarco_beir.sh's own batch
        assert (cfg.rl.clip_low, cfg.rl.gamma, cfg.rl.lam, cfg.rl.prompts_per_step, cfg.rl.mini_batch_prompts) == \
            (0.2, 1.0, 1.0, *batch)
    else:
        assert cfg.rl.group_size >= 2


def test_family_specific_values():
    assert load_config(CONFIGS[0].parent / "squad.toml").task.resolved_dataset == "squad"
    spider = load_config(CONFIGS[0].parent / "spider.toml")
    assert spider.task.split_map == {"train": "train", "test": "dev"} and spider.model.max_prompt_tokens == 2048
    msm = load_config(CONFIGS[0].parent / "msmarco_tech_dense.toml")
    assert (msm.task.template, msm.task.reward_k, msm.task.recall_bonus, msm.task.engine.kind) == \
        ("msmarco_dense", 10, 0.0, "dense")
    assert (msm.task.resolved_dataset, msm.task.engine.model) == ("msmarco_subset", "facebook/contriever")
    assert load_config(CONFIGS[0].parent / "triviaqa.toml").task.resolved_template == "evidence_tqa_squad"
    ctgov = load_config(CONFIGS[0].parent / "ctgov.toml").task
    assert (ctgov.resolved_template, ctgov.date_limit) == ("ctgov", False)


def test_overrides_are_typed():
    cfg = config_from_dict(MINIMAL, ["rl.actor_optim.lr=2e-6", "rl.gradient_checkpointing=true",
                                     "task.engine.kind=dense", "task.engine.model='BAAI/bge-base-en-v1.5'",
                                     "rl.actor_optim.betas=[0.9, 0.95]", "rl.actor_optim.grad_clip=none",
                                     "task.engine.medline=[\"a.xml\"]", "rl.sampling.temperature=1"])
    assert cfg.rl.actor_optim.lr == 2e-6 and cfg.rl.gradient_checkpointing is True
    assert cfg.task.engine.kind == "dense" and cfg.task.engine.model == "BAAI/bge-base-en-v1.5"
    assert cfg.rl.actor_optim.betas == (0.9, 0.95) and cfg.rl.actor_optim.grad_clip is None
    assert cfg.task.engine.medline == ("a.xml",)
    assert cfg.rl.sampling.temperature == 1.0 and isinstance(cfg.rl.sampling.temperature, float)


@pytest.mark.parametrize("overrides, message", [
    (["rl.actor_optim.lrr=1"], "unknown key 'rl.actor_optim.lrr'"),
    (["modle.name=x"], "unknown key 'modle'"),
    (["rl.total_steps=ten"], "rl.total_steps = 'ten': expected int"),
    (["rl.total_steps=1.5"], "rl.total_steps = 1.5: expected int"),
    (["rl.gradient_checkpointing=1"], "rl.gradient_checkpointing = 1: expected bool"),
    (["task.k=none"], "task.k = None: expected int"),
    (["rl.actor_optim.betas=[0.9]"], "rl.actor_optim.betas"),
    (["total_steps"], "is not KEY=VALUE"),
    (["rl..lr=1"], "is not KEY=VALUE"),
    (["rl.algorithm=dqn"], "algorithm must be one of"),
    (["task.family=web"], "task.family = 'web' is not one of"),
    (["task.engine.kind=solr"], "task.engine.kind = 'solr' is not one of"),
    (["task.engine.kind=pubmed"], "does not fit classic_ir"),
    (["task.template=sql"], "does not fit family 'classic_ir'"),
    (["task.dataset=squad"], "task.dataset = 'squad' is not one of"),
    (["task.data="], "task.data is empty"),
])
def test_errors_name_the_bad_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[").replace(".", r"\.")):
        config_from_dict(MINIMAL, overrides)


def test_extends_and_resolved_round_trip(tmp_path):
    (tmp_path / "base.toml").write_text('[rl]\ntotal_steps = 5\n[task]\nfamily = "classic_ir"\ndata = "d"\n')
    (tmp_path / "exp.toml").write_text('extends = "base.toml"\n[rl]\ngroup_size = 4\n')
    cfg = load_config(tmp_path / "exp.toml", ["rl.rollout_chunk_prompts=none"])
    assert (cfg.rl.total_steps, cfg.rl.group_size, cfg.task.data) == (5, 4, "d")
    path = write_resolved(cfg, tmp_path / "run")
    assert path.name == "config.json" and load_config(path) == cfg
    (tmp_path / "loop.toml").write_text('extends = "loop.toml"\n')
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "loop.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[rl\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(tmp_path / "bad.toml")


def test_demo_config_builds_offline_from_the_packaged_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPRETRIEVAL_CACHE", str(tmp_path))
    cfg = load_config(CONFIGS[0].parent / "demo.toml", ["task.limit=20"])
    task = build_task(cfg.task)
    assert len(task.prompts("train")) == 20 and len(task.raw_queries("test")) == 20
    assert (tmp_path / "data" / "scifact" / "corpus.jsonl").is_file()
    # the demo's engine is the PubMed-syntax backend: claims typed as is AND every word
    assert task.evaluate(task.raw_queries("test"), "test")["recall@100"] < 0.2


@pytest.mark.parametrize("base", ["pubmed", "ctgov", "nq", "scifact_bm25", "spider"])
def test_no_reasoning_ablations_differ_from_their_experiment_only_in_reasoning(base):
    import dataclasses
    ablation = load_config(CONFIGS[0].parent / f"{base}_no_reasoning.toml")
    experiment = load_config(CONFIGS[0].parent / f"{base}.toml")
    assert ablation.task.reasoning is False and experiment.task.reasoning is True
    assert dataclasses.replace(ablation.task, reasoning=True) == experiment.task
    assert ablation.rl == experiment.rl and ablation.model == experiment.model
