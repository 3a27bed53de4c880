"""Layer groups, freezing, per-group learning rates and SB3 compatibility, for PPO, SAC and TD3."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback

from sim2real.learning.groups import GROUPED, layer_groups, regroup_optimizers, reinitialize

PLAIN = {"ppo": PPO, "sac": SAC, "td3": TD3}
KWARGS = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 2, "policy_kwargs": {"net_arch": [16, 16]}},
    "sac": {"learning_starts": 16, "batch_size": 16, "policy_kwargs": {"net_arch": [16, 16]}},
    "td3": {"learning_starts": 16, "batch_size": 16, "policy_kwargs": {"net_arch": [16, 16]}},
}
ALGOS = list(KWARGS)


def make(algo, seed=0):
    env = gym.make("InvertedPendulum-v5")
    return GROUPED[algo]("MlpPolicy", env, seed=seed, device="cpu", **KWARGS[algo])


def snapshot(params):
    return [p.detach().clone() for p in params]


class GroupLRRecorder(BaseCallback):
    """Reads the optimisers' param groups while training runs."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def _on_step(self):
        opts = [self.model.policy.optimizer] if hasattr(self.model.policy, "optimizer") else [
            self.model.actor.optimizer, self.model.critic.optimizer]
        self.seen.append({g["name"]: g["lr"] for o in opts for g in o.param_groups})
        return True


@pytest.mark.parametrize("algo", ALGOS)
def test_groups_cover_every_hidden_and_output_layer(algo):
    model = make(algo)
    groups = layer_groups(model, feature_layers=1)
    assert groups.n_hidden == 2
    named = {id(p) for g in ("actor_features", "actor_head") for p in groups.params_of(g)}
    actor = model.policy.actor if algo != "ppo" else None
    if actor is not None:
        assert named == {id(p) for p in actor.parameters()}
    else:
        expected = list(model.policy.mlp_extractor.policy_net.parameters()) + list(model.policy.action_net.parameters())
        assert named == {id(p) for p in expected} | {id(model.policy.log_std)}
    with pytest.raises(ValueError, match="choose 0..2"):
        layer_groups(model, feature_layers=3)


@pytest.mark.parametrize("algo", ALGOS)
def test_frozen_features_are_bit_identical_after_training(algo):
    model = make(algo)
    groups = layer_groups(model, 1)
    regroup_optimizers(model, groups, {}, frozen={"actor_features", "critic_features"})
    frozen_before = snapshot(groups.params_of("actor_features") + groups.params_of("critic_features"))
    head_before = snapshot(groups.params_of("actor_head"))
    model.learn(200)
    for before, p in zip(frozen_before, groups.params_of("actor_features") + groups.params_of("critic_features")):
        assert torch.equal(before, p), "a frozen weight moved"
    assert any(not torch.equal(b, p) for b, p in zip(head_before, groups.params_of("actor_head"))), "the head did not learn"
    all_opt_params = {id(p) for o in _optimizers(model) for g in o.param_groups for p in g["params"]}
    assert not all_opt_params & {id(p) for p in groups.params_of("actor_features")}


def _optimizers(model):
    if isinstance(model, PPO):
        return [model.policy.optimizer]
    return [model.actor.optimizer, model.critic.optimizer]


@pytest.mark.parametrize("algo", ALGOS)
def test_learning_rate_scales_survive_sb3_schedule(algo):
    model = make(algo)
    model.learning_rate = lambda progress: 1e-3 * progress  # a schedule SB3 rewrites every update
    model._setup_lr_schedule()
    regroup_optimizers(model, layer_groups(model, 1), {"actor_features": 0.1, "critic_features": 0.25}, frozen=set())
    rec = GroupLRRecorder()
    model.learn(300, callback=rec)
    late = rec.seen[-1]
    assert late["actor_features"] == pytest.approx(0.1 * late["actor_head"])
    assert late["critic_features"] == pytest.approx(0.25 * late["critic_head"])
    assert late["actor_head"] < 1e-3  # the schedule itself still applies


@pytest.mark.parametrize("algo", ALGOS)
def test_checkpoints_load_with_plain_sb3(algo, tmp_path):
    model = make(algo)
    regroup_optimizers(model, layer_groups(model, 1), {"actor_features": 0.1}, frozen={"critic_features"})
    model.learn(100)
    model.save(tmp_path / "m.zip")
    plain = PLAIN[algo].load(tmp_path / "m.zip", device="cpu")
    obs = model.observation_space.sample()
    assert torch.equal(
        torch.as_tensor(plain.predict(obs, deterministic=True)[0]),
        torch.as_tensor(model.predict(obs, deterministic=True)[0]),
    )


def test_reinitialize_changes_only_named_groups():
    model = make("ppo")
    groups = layer_groups(model, 1)
    features = snapshot(groups.params_of("actor_features"))
    head = snapshot(groups.params_of("actor_head")[:2])
    reinitialize(groups, ["actor_head"], seed=1)
    assert all(torch.equal(a, b) for a, b in zip(features, groups.params_of("actor_features")))
    assert not torch.equal(head[0], groups.params_of("actor_head")[0])


def test_critic_warmup_keeps_the_actor_still():
    model = make("ppo")
    regroup_optimizers(model, layer_groups(model, 1), {}, frozen=set())
    model.critic_warmup_updates = 2
    actor = snapshot(model.policy.mlp_extractor.policy_net.parameters())
    critic = snapshot(model.policy.mlp_extractor.value_net.parameters())
    model.learn(128)  # two rollouts of 64 -> two updates, both warm-up
    assert all(torch.equal(a, b) for a, b in zip(actor, model.policy.mlp_extractor.policy_net.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(critic, model.policy.mlp_extractor.value_net.parameters()))
    model.learn(64, reset_num_timesteps=False)
    assert any(not torch.equal(a, b) for a, b in zip(actor, model.policy.mlp_extractor.policy_net.parameters()))
