"""The policy's inputs (last action, history): laid out as documented, recorded with the policy, applied in every world."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from sim2real.learning.loading import load_for_evaluation, load_pretrained
from sim2real.learning.pretrain import PretrainConfig, pretrain
from sim2real.spec import PolicyInputs
from sim2real.worlds.inputs import PolicyInputsWrapper
from tests.conftest import DATA, TINY


def test_history_layout_is_current_obs_then_past_obs_then_past_actions():
    env = PolicyInputsWrapper(gym.make("InvertedPendulum-v5"), history=2)
    assert env.observation_space.shape == (4 + 2 * 4 + 2 * 1,)
    o0, _ = env.reset(seed=0)
    raw0 = o0[:4].copy()
    assert np.array_equal(o0[4:8], raw0) and np.array_equal(o0[8:12], raw0) and np.all(o0[12:] == 0)
    o1, *_ = env.step(np.array([0.5], dtype=np.float32))
    o2, *_ = env.step(np.array([-0.25], dtype=np.float32))
    np.testing.assert_array_equal(o2[4:8], o1[:4])  # obs_{t-1}
    np.testing.assert_array_equal(o2[8:12], raw0)  # obs_{t-2}
    np.testing.assert_allclose(o2[12:], [-0.25, 0.5])  # a_{t-1}, a_{t-2}


@pytest.fixture(scope="module")
def history_policy(tmp_path_factory):
    out = tmp_path_factory.mktemp("hist") / "run"
    cfg = PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=128, eval_every=128, eval_episodes=1,
                         checkpoint_every=128, overrides=TINY, inputs={"history": 2})
    return pretrain(cfg, out=out)


def test_inputs_are_recorded_with_the_policy_and_plain_ppo_load_opens_it(history_policy):
    from stable_baselines3 import PPO

    config = json.loads((history_policy / "run.json").read_text())["config"]
    assert config["spec"]["observation"] == {"last_action": False, "history": 2}
    pre = load_pretrained(history_policy)
    assert pre.inputs.history == 2
    model = PPO.load(history_policy / "model.zip", device="cpu")
    assert model.observation_space.shape == (14,)


def test_a_plain_user_env_gets_the_policy_inputs_in_transfer_and_evaluate(history_policy, tmp_path):
    from sim2real.cli import main
    from sim2real.transfer.run import TransferConfig, transfer

    # tests.robot_stub makes a plain InvertedPendulum (4 numbers): the policy's 14 inputs are added for it.
    cfg = TransferConfig(policy=str(history_policy), target="tests.robot_stub:make_env", strategy="finetune",
                         budget=64, eval_every=64, eval_episodes=1)
    run = transfer(cfg, out=tmp_path / "plug", quiet=True)
    assert json.loads((run / "result.json").read_text())["final_mean"] > 0
    assert main(["evaluate", str(run), "--targets", "tests.robot_stub:make_env", "--episodes", "1"]) == 0


def test_init_from_a_policy_without_inputs_acts_exactly_as_it_did(tiny_pretrained, tmp_path):
    out = tmp_path / "wide"
    cfg = PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=64, eval_every=64, eval_episodes=1,
                         checkpoint_every=64, overrides={**TINY, "learning_rate": 0.0}, inputs={"history": 1},
                         init_from=str(tiny_pretrained))
    pretrain(cfg, out=out)
    (_, _, narrow), (_, _, wide) = load_for_evaluation(tiny_pretrained), load_for_evaluation(out)
    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    extra = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)  # past obs and action: weight 0
    with torch.no_grad():
        a = narrow.policy.predict(obs, deterministic=True)[0]
        b = wide.policy.predict(np.concatenate([obs, extra], axis=1), deterministic=True)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inputs", [PolicyInputs(last_action=True), PolicyInputs(history=2)])
def test_a_recorded_episode_composes_to_what_the_policy_saw_live(inputs):
    from sim2real.worlds.inputs import compose_episode

    raw = gym.make("InvertedPendulum-v5", max_episode_steps=20)
    env = PolicyInputsWrapper(raw, last_action=inputs.last_action, history=inputs.history)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    live, raw_obs, actions = [obs], [raw.unwrapped._get_obs()], []
    for _ in range(10):
        a = rng.uniform(-3, 3, size=1).astype(np.float32)
        obs, *_ = env.step(a)
        live.append(obs)
        raw_obs.append(raw.unwrapped._get_obs())
        actions.append(a)
    np.testing.assert_allclose(compose_episode(np.array(raw_obs), np.array(actions), inputs), np.array(live), rtol=1e-6)


def test_init_from_a_policy_with_its_last_action_moves_those_weights_to_the_last_action(tiny_pretrained, tmp_path):
    """From [obs, a1] to [obs, obs1, obs2, a1, a2]: a1's weights must follow a1, not land on a past observation
    (they did, silently; the normalisation statistics then failed to broadcast)."""
    base = dict(task=str(DATA / "pendulum_norm.yaml"), steps=64, eval_every=64, eval_episodes=1,
                checkpoint_every=64, overrides={**TINY, "learning_rate": 0.0})
    pretrain(PretrainConfig(**base, inputs={"last_action": True}, init_from=str(tiny_pretrained)), out=tmp_path / "a")
    pretrain(PretrainConfig(**base, inputs={"history": 2}, init_from=str(tmp_path / "a")), out=tmp_path / "h")
    (_, _, narrow), (_, _, wide) = load_for_evaluation(tmp_path / "a"), load_for_evaluation(tmp_path / "h")
    rng = np.random.default_rng(0)
    obs, past, a1, a2 = (rng.normal(size=(8, n)).astype(np.float32) for n in (4, 8, 1, 1))
    with torch.no_grad():
        a = narrow.policy.predict(np.concatenate([obs, a1], axis=1), deterministic=True)[0]
        b = wide.policy.predict(np.concatenate([obs, past, a1, a2], axis=1), deterministic=True)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_widened_normalisation_keeps_each_inputs_statistics():
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    from sim2real.learning.pretrain import widen_obs_rms
    from sim2real.worlds.inputs import column_map, input_columns

    old, new = PolicyInputs(last_action=True), PolicyInputs(history=2)
    rms = RunningMeanStd(shape=(6,))  # obs (4) + last action (2)
    rms.mean, rms.var, rms.count = np.arange(6.0), np.arange(6.0) + 10, 99
    wide = widen_obs_rms(rms, input_columns(new, 4, 2), column_map(old, new, 4, 2))
    np.testing.assert_array_equal(wide.mean, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 4, 5])
    np.testing.assert_array_equal(wide.var[12:], [14, 15, 14, 15])
    assert wide.count == 99
    with pytest.raises(ValueError, match="inputs can only be added"):
        column_map(new, old, 4, 2)
