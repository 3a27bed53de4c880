"""Drive an env with an exported policy using numpy and onnxruntime only (no torch, no SB3, no sim2real).

Copy this file and the exported ``policy.onnx`` + ``policy.json`` to the robot's computer::

    pip install numpy onnxruntime            # plus whatever your robot's env needs
    python run_onnx_policy.py policy.onnx --env Hopper-v5 --episodes 3

The policy keeps no state of its own: this loop feeds it the previous command(s) and observations
(``past_actions``, ``past_obs``, newest first) as the policy's JSON says. Swap ``gymnasium.make`` for
your robot's env; its observations must match the sim's in order and units.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


class OnnxPolicy:
    """An exported sim2real policy and the short memory its inputs need."""

    def __init__(self, path: str | Path):
        self.card = json.loads(Path(path).with_suffix(".json").read_text())
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.session.get_inputs()}
        self.act_dim = self.card["output"]["action"][0]
        self.history = self.card["observation_inputs"]["history"]
        self.n_past_actions = self.card["inputs"]["past_actions"][0] // self.act_dim if self.act_dim else 0
        self.reset()

    def reset(self) -> None:
        """Forget the past: call at the start of every episode."""
        obs_dim = self.card["inputs"]["obs"][0]
        self.past_actions = [np.zeros(self.act_dim, np.float32)] * self.n_past_actions
        self.past_obs = None if not self.history else [np.zeros(obs_dim, np.float32)] * self.history
        self._first = True

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32).ravel()
        if self.history and self._first:
            self.past_obs = [obs] * self.history  # as in training: the first observation repeated
        self._first = False
        feeds = {
            "obs": obs[None],
            "past_actions": (np.concatenate(self.past_actions) if self.past_actions else np.zeros(0, np.float32))[None],
            "past_obs": (np.concatenate(self.past_obs) if self.history else np.zeros(0, np.float32))[None],
        }
        action = self.session.run(["action"], {k: v for k, v in feeds.items() if k in self.names})[0][0]
        if self.n_past_actions:
            self.past_actions = [action] + self.past_actions[:-1]
        if self.history:
            self.past_obs = [obs] + self.past_obs[:-1]
        return action


def main() -> None:
    import gymnasium as gym

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policy", help="the exported .onnx file (its .json beside it)")
    p.add_argument("--env", default="Hopper-v5", help="a Gymnasium id (or change the code to build your robot's env)")
    p.add_argument("--episodes", type=int, default=3)
    args = p.parse_args()
    policy = OnnxPolicy(args.policy)
    env = gym.make(args.env)
    calls = []
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=ep)
        policy.reset()
        total, done = 0.0, False
        while not done:
            t0 = time.perf_counter()
            action = policy(obs)
            calls.append(time.perf_counter() - t0)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        print(f"episode {ep}: return {total:.1f}")
    print(f"policy call: median {np.median(calls) * 1e3:.3f} ms, p99 {np.percentile(calls, 99) * 1e3:.3f} ms "
          f"over {len(calls)} calls")


if __name__ == "__main__":
    main()
