"""Models trained with plain SB3 or the RL Zoo come in with --task, read without running anything from them."""

import json
import os
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sim2real.learning.foreign import ForeignPolicyError, read_vecnormalize
from sim2real.learning.loading import load_for_evaluation, load_pretrained


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory):
    """An RL Zoo-style run folder: <env id>.zip and <env id>/vecnormalize.pkl, trained with plain SB3."""
    folder = tmp_path_factory.mktemp("zoo") / "ppo" / "InvertedPendulum-v5_1"
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("InvertedPendulum-v5")]))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=32, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [16, 16], "activation_fn": torch.nn.ReLU})
    model.learn(128)
    (folder / "InvertedPendulum-v5").mkdir(parents=True)
    model.save(folder / "InvertedPendulum-v5.zip")
    venv.save(folder / "InvertedPendulum-v5" / "vecnormalize.pkl")
    return folder


def test_plain_sb3_model_acts_as_it_does_in_sb3(zoo_folder):
    pre, spec, ours = load_for_evaluation(zoo_folder, task="inverted_pendulum")
    assert pre.algo == "ppo" and pre.policy_kwargs["net_arch"] == {"pi": [16, 16], "vf": [16, 16]}
    assert pre.policy_kwargs["activation_fn"] is torch.nn.ReLU
    theirs = PPO.load(zoo_folder / "InvertedPendulum-v5.zip", device="cpu")
    norm = VecNormalize.load(zoo_folder / "InvertedPendulum-v5" / "vecnormalize.pkl",
                             DummyVecEnv([lambda: gym.make("InvertedPendulum-v5")]))
    obs = np.random.default_rng(0).normal(size=(20, 4))
    np.testing.assert_allclose(pre.obs_rms.mean, norm.obs_rms.mean)
    ours_norm = np.clip((obs - pre.obs_rms.mean) / np.sqrt(pre.obs_rms.var + 1e-8), -10, 10)
    np.testing.assert_allclose(ours_norm, norm.normalize_obs(obs), atol=1e-12)
    np.testing.assert_allclose(ours.predict(ours_norm, deterministic=True)[0],
                               theirs.predict(norm.normalize_obs(obs), deterministic=True)[0], atol=1e-6)


def test_plain_sb3_model_transfers(zoo_folder, tmp_path):
    from sim2real.transfer.run import TransferConfig, transfer

    cfg = TransferConfig(policy=str(zoo_folder), task="inverted_pendulum", target="real", strategy="finetune",
                         budget=128, eval_episodes=1, eval_every=64, overrides={"n_steps": 64, "batch_size": 32})
    run = transfer(cfg, tmp_path / "run", quiet=True)
    result = json.loads((run / "result.json").read_text())
    assert result["target_steps"]["training"] >= 128
    assert (run / "model.zip").exists()


def test_without_task_the_error_says_how(zoo_folder):
    with pytest.raises(FileNotFoundError, match="--task TASK"):
        load_pretrained(zoo_folder)


def test_wrong_task_is_named(zoo_folder):
    with pytest.raises(ValueError, match=r"shape \(4,\).*'hopper'.*\(11,\)"):
        load_pretrained(zoo_folder, task="hopper")


def test_sac_architecture_is_read(tmp_path):
    model = SAC("MlpPolicy", "InvertedPendulum-v5", learning_starts=10, buffer_size=100, seed=0,
                policy_kwargs={"net_arch": [8, 8]})
    model.learn(20)
    model.save(tmp_path / "sac.zip")
    pre = load_pretrained(tmp_path / "sac.zip", task="inverted_pendulum")
    assert pre.algo == "sac" and pre.policy_kwargs["net_arch"] == {"pi": [8, 8], "qf": [8, 8]}
    assert pre.norm is None


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_crafted_vecnormalize_runs_nothing(tmp_path):
    path = tmp_path / "vecnormalize.pkl"
    path.write_bytes(pickle.dumps({"obs_rms": _Evil()}))
    with pytest.raises(ForeignPolicyError, match="refusing to build"):
        read_vecnormalize(path)


def test_a_crafted_dtype_cannot_reach_numpy(tmp_path):
    """An object dtype re-flagged through BUILD (a pointer array read from the file) is never built."""
    def glob(m, n):
        return b"c" + m.encode() + b"\n" + n.encode() + b"\n"

    def p(o):
        return pickle.dumps(o, protocol=3)[2:-1]

    dtype = glob("numpy", "dtype") + p(("O8", False, True)) + b"R" + p((3, "|", None, None, None, -1, -1, 0)) + b"b"
    arr = glob("numpy", "ndarray") + b"(" + p((1,)) + dtype + p(b"\x10" + b"\x00" * 7) + b"tR"
    rms = glob("stable_baselines3.common.running_mean_std", "RunningMeanStd") + b")\x81"
    body = (glob("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize") + b")\x81}(" + p("obs_rms") + rms
            + b"}(" + p("mean") + arr + p("var") + p(1.0) + p("count") + p(1.0) + b"ub" + p("ret_rms") + rms
            + b"}(" + p("mean") + p(0.0) + p("var") + p(1.0) + p("count") + p(1.0) + b"ub" + p("clip_obs") + p(10.0)
            + p("clip_reward") + p(10.0) + p("norm_reward") + p(False) + b"ub")
    path = tmp_path / "vecnormalize.pkl"
    path.write_bytes(b"\x80\x03" + body + b".")
    with pytest.raises(ForeignPolicyError):
        read_vecnormalize(path)


def test_td3_architecture_is_read(tmp_path):
    from stable_baselines3 import TD3

    model = TD3("MlpPolicy", "InvertedPendulum-v5", learning_starts=10, buffer_size=100, seed=0,
                policy_kwargs={"net_arch": [8, 8]})
    model.learn(20)
    model.save(tmp_path / "td3.zip")
    pre = load_pretrained(tmp_path / "td3.zip", task="inverted_pendulum")
    assert pre.algo == "td3" and pre.policy_kwargs["net_arch"] == {"pi": [8, 8], "qf": [8, 8]}
    from sim2real.learning.loading import policy_model
    policy_model(pre, DummyVecEnv([lambda: gym.make("InvertedPendulum-v5")]))  # the weights fit the network
