"""Transfer strategies end to end on a tiny policy, and the mechanics each must get right."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from sim2real.learning.groups import layer_groups
from sim2real.learning.loading import load_pretrained
from sim2real.spec import load_spec
from sim2real.transfer.cases import classify
from sim2real.transfer.run import TransferConfig, TransferError, build_model, transfer
from sim2real.transfer.strategies import STRATEGIES

FAST = {"eval_every": 128, "eval_episodes": 1}


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "auto"])
def test_every_strategy_runs_and_writes_a_result(tiny_pretrained, tmp_path, strategy):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy=strategy, budget=128, **FAST)
    run = transfer(cfg, out=tmp_path / strategy, quiet=True)
    result = json.loads((run / "result.json").read_text())
    assert result["strategy"] == strategy and len(result["final_returns"]) == 1
    lines = (run / "evaluations.csv").read_text().splitlines()
    assert lines[0] == "step,target" and lines[1].startswith("0,")
    if strategy != "zero-shot":
        assert (run / "model.zip").exists() and any((run / "tb").iterdir())


def test_freeze_keeps_features_bit_identical_in_a_real_transfer(tiny_pretrained, tmp_path):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="freeze", budget=256, **FAST)
    run = transfer(cfg, out=tmp_path / "f", quiet=True)
    pre = load_pretrained(tiny_pretrained)
    from stable_baselines3 import PPO

    model = PPO.load(run / "model.zip", device="cpu")  # an ordinary SB3 model
    w = model.policy.mlp_extractor.policy_net[0].weight
    assert torch.equal(w, pre.state_dict["mlp_extractor.policy_net.0.weight"])
    head = model.policy.mlp_extractor.policy_net[2].weight
    assert not torch.equal(head, pre.state_dict["mlp_extractor.policy_net.2.weight"])


def test_finetune_gives_features_a_lower_rate_and_freeze_layers_freezes(tiny_pretrained):
    from sim2real.transfer.strategies import apply_strategy

    pre = load_pretrained(tiny_pretrained)
    spec = load_spec(pre.task)
    env = gym.make("InvertedPendulum-v5")
    cfg = TransferConfig(policy=str(tiny_pretrained), strategy="finetune", lr_scale=0.1, freeze_layers=1)
    model = build_model(pre, env, spec, cfg, 128, fresh=False)
    apply_strategy(model, "finetune", cfg)
    # With freeze_layers == feature_layers the features are frozen and left out of the optimiser ...
    assert "actor_features" not in {g["name"] for g in model.policy.optimizer.param_groups}
    frozen = layer_groups(model, 1).params_of("actor_features")
    assert all(not p.requires_grad for p in frozen)
    in_opt = {id(p) for g in model.policy.optimizer.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in frozen}


@pytest.mark.parametrize("lr_scale", [0.1, 0.37])
def test_lr_scale_reaches_the_optimiser_through_apply_strategy(tiny_pretrained, lr_scale):
    from sim2real.transfer.strategies import apply_strategy

    pre = load_pretrained(tiny_pretrained)
    cfg = TransferConfig(policy=str(tiny_pretrained), strategy="finetune", lr_scale=lr_scale)
    model = build_model(pre, gym.make("InvertedPendulum-v5"), pre.spec, cfg, 128, fresh=False)
    apply_strategy(model, "finetune", cfg)
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(None, []))
    model._update_learning_rate(model.policy.optimizer)  # SB3's per-update write, then our scales
    lrs = {g["name"]: g["lr"] for g in model.policy.optimizer.param_groups}
    base = pre.hyperparams.get("learning_rate", 3e-4)
    assert lrs["actor_head"] == pytest.approx(base)
    assert lrs["actor_features"] == pytest.approx(base * lr_scale)
    assert lrs["critic_features"] == pytest.approx(base * lr_scale)


def test_scratch_trains_the_tasks_own_recipe_not_the_pretraining_runs_overrides(tiny_pretrained):
    """A policy continued at a low learning rate (--set learning_rate=...) must not slow its scratch baseline down."""
    pre = load_pretrained(tiny_pretrained)
    pre.overrides = {**(pre.overrides or {}), "learning_rate": 1e-5, "n_epochs": 7}
    pre.hyperparams = {**pre.hyperparams, "learning_rate": 1e-5, "n_epochs": 7}
    env = gym.make("InvertedPendulum-v5")
    cfg = TransferConfig(policy=str(tiny_pretrained), strategy="scratch")
    scratch = build_model(pre, env, pre.spec, cfg, 128, fresh=True)
    finetune = build_model(pre, env, pre.spec, cfg, 128, fresh=False)
    assert scratch.learning_rate == 3e-4 and scratch.n_epochs == 2  # SB3's default lr, the spec's n_epochs
    assert finetune.learning_rate == 1e-5 and finetune.n_epochs == 7  # the policy's own, as it was last trained
    # the architecture is the policy's either way
    assert [p.shape for p in scratch.policy.parameters()] == [p.shape for p in finetune.policy.parameters()]


def test_normalisation_statistics_stay_frozen_unless_asked(tiny_pretrained, tmp_path):
    pre = load_pretrained(tiny_pretrained)
    for norm, should_change in (("frozen", False), ("adapt", True)):
        cfg = TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="finetune", budget=128, norm=norm, **FAST)
        run = transfer(cfg, out=tmp_path / norm, quiet=True)
        with np.load(run / "obs_rms.npz") as z:
            changed = not np.allclose(z["mean"], pre.obs_rms.mean)
        assert changed == should_change


def test_reset_exploration_sets_log_std(tiny_pretrained, tmp_path):
    from stable_baselines3 import PPO

    cfg = TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="full", budget=64, reset_exploration=-0.5,
                         overrides={"learning_rate": 0.0}, **FAST)
    run = transfer(cfg, out=tmp_path / "x", quiet=True)
    assert torch.allclose(PPO.load(run / "model.zip").policy.log_std, torch.full((1,), -0.5))


def test_mismatched_spaces_name_both(tiny_pretrained, tmp_path):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="Hopper-v5", strategy="finetune", budget=64)
    with pytest.raises(TransferError, match=r"observation spaces differ: the policy expects Box.*\(4,\).*has Box.*\(11,\)"):
        transfer(cfg, out=tmp_path / "bad", quiet=True)


def test_unknown_target_and_strategy_are_user_errors(tiny_pretrained, tmp_path):
    with pytest.raises(TransferError, match="not a target world"):
        transfer(TransferConfig(policy=str(tiny_pretrained), target="mars"), out=tmp_path / "a", quiet=True)
    with pytest.raises(TransferError, match="allowed: zero-shot"):
        transfer(TransferConfig(policy=str(tiny_pretrained), strategy="magic"), out=tmp_path / "b", quiet=True)


def test_plug_in_factory_target(tiny_pretrained, tmp_path):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:make_env", strategy="finetune", budget=64, **FAST)
    run = transfer(cfg, out=tmp_path / "robot", quiet=True)
    assert json.loads((run / "result.json").read_text())["target"] == "tests.robot_stub:make_env"


def test_finished_run_is_never_overwritten(tiny_pretrained, tmp_path):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="zero-shot", **FAST)
    transfer(cfg, out=tmp_path / "z", quiet=True)
    before = (tmp_path / "z" / "result.json").read_text()
    with pytest.raises(FileExistsError):
        transfer(cfg, out=tmp_path / "z", quiet=True)
    assert (tmp_path / "z" / "result.json").read_text() == before


@pytest.mark.parametrize(
    ("budget", "zero_shot", "changed", "case", "strategy"),
    [(25_000, 900, False, 1, "freeze"), (25_000, 900, True, 2, "reinit-top"), (150_000, 900, False, 3, "finetune"),
     (150_000, 100, False, 4, "full")],
)
def test_classify_four_cases(budget, zero_shot, changed, case, strategy):
    d = classify(load_spec("hopper"), budget, sim_return=1000, zero_shot=zero_shot, task_changed=changed)
    assert (d.case, d.strategy) == (case, strategy)
    assert f"case {case}" in d.reason


@pytest.mark.parametrize("similarity", [0.0, 1.0])
def test_auto_runs_the_strategy_of_the_case_it_measured(tiny_pretrained, tmp_path, similarity):
    from sim2real.transfer.strategies import CASE_STRATEGY

    # similarity 0: any zero-shot return counts as similar (case 1); 1.0: nothing does (case 2).
    cfg = TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="auto", budget=128,
                         similarity_threshold=similarity, **FAST)
    run = transfer(cfg, out=tmp_path / "auto", quiet=True)
    result = json.loads((run / "result.json").read_text())
    expected_case = 1 if similarity == 0.0 else 2
    assert result["decision"]["case"] == expected_case
    assert result["ran_strategy"] == CASE_STRATEGY[expected_case] == result["decision"]["strategy"]


def test_loading_never_unpickles(tiny_pretrained, no_unpickling):
    from stable_baselines3 import PPO

    # The guard itself works: SB3's own loader (cloudpickle) trips it ...
    with pytest.raises(AssertionError, match="unpickled"):
        PPO.load(tiny_pretrained / "model.zip", device="cpu")
    # ... and sim2real's does not.
    pre = load_pretrained(tiny_pretrained)
    assert pre.algo == "ppo" and pre.obs_rms is not None


def test_a_plug_in_transfer_counts_every_target_step_on_one_instance(tiny_pretrained, tmp_path, monkeypatch):
    import tests.robot_stub as stub

    built = []
    monkeypatch.setattr(stub, "BUILT", built, raising=False)
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:make_env", strategy="finetune",
                         budget=128, eval_every=64, eval_episodes=2)
    run = transfer(cfg, out=tmp_path / "count", quiet=True)
    steps = json.loads((run / "result.json").read_text())["target_steps"]
    assert steps["training"] == 128
    assert steps["evaluation"] > 0 and steps["total"] == steps["training"] + steps["evaluation"]
    assert len(built) == 1  # a robot exists once: training and evaluation share the instance
    built.clear()
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:make_env", strategy="zero-shot",
                         eval_episodes=2)
    transfer(cfg, out=tmp_path / "zs", quiet=True)
    assert len(built) == 1  # zero-shot only evaluates


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_reinit_top_resets_the_target_networks_too(algo, tmp_path):
    from sim2real.learning.pretrain import PretrainConfig, pretrain
    from sim2real.transfer.strategies import apply_strategy
    from tests.conftest import DATA

    out = pretrain(PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), algo=algo, steps=64, eval_every=64,
                                  eval_episodes=1, checkpoint_every=64,
                                  overrides={"learning_starts": 32, "policy_kwargs": {"net_arch": [16, 16]}}),
                   out=tmp_path / algo)
    pre = load_pretrained(out)
    cfg = TransferConfig(policy=str(out), strategy="reinit-top")
    model = build_model(pre, gym.make("InvertedPendulum-v5"), pre.spec, cfg, 128, fresh=False)
    apply_strategy(model, "reinit-top", cfg)
    for online, target in (("critic", "critic_target"), ("actor", "actor_target")):
        if getattr(model, target, None) is None:
            continue
        for name, w in getattr(model, online).state_dict().items():
            assert torch.equal(w, getattr(model, target).state_dict()[name]), f"{target}.{name} kept old weights"


def test_reinit_head_replaces_only_the_action_layer(tiny_pretrained, tmp_path):
    from stable_baselines3 import PPO

    cfg = TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="freeze", reinit_head=True, budget=64,
                         overrides={"learning_rate": 0.0}, **FAST)
    run = transfer(cfg, out=tmp_path / "rh", quiet=True)
    pre = load_pretrained(tiny_pretrained).state_dict
    sd = PPO.load(run / "model.zip").policy.state_dict()
    assert not torch.equal(sd["action_net.weight"], pre["action_net.weight"])
    assert torch.equal(sd["mlp_extractor.policy_net.2.weight"], pre["mlp_extractor.policy_net.2.weight"])


def test_python_api_mirrors_the_cli(tiny_pretrained, tmp_path):
    import sim2real

    cfg = sim2real.TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="zero-shot", **FAST)
    run = sim2real.run_transfer(cfg, out=tmp_path / "api")
    assert (run / "result.json").exists()


def test_zero_shot_is_a_flat_tensorboard_line_and_runs_carry_hparams(tiny_pretrained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="zero-shot", budget=256, **FAST)
    run = transfer(cfg, out=tmp_path / "zs", quiet=True)
    events = EventAccumulator(str(run / "tb"), size_guidance={"tensors": 0}).Reload()
    line = events.Scalars("eval/target/mean_return")
    assert [e.step for e in line] == [0, 256] and line[0].value == line[1].value
    assert events.PluginTagToContent("hparams"), "no hparams written"
    run = transfer(TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="finetune", budget=128, **FAST),
                   out=tmp_path / "ft", quiet=True)
    events = EventAccumulator(str(next((run / "tb").glob("events*")).parent)).Reload()
    assert events.PluginTagToContent("hparams"), "a training run carries its hparams too"
