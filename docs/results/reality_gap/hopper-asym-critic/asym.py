"""Experiment (#11): PPO on hopper's randomised batched world with an asymmetric critic.

The observation is [policy inputs, privileged], privileged = the episode's physics draws and effect draws
(plus the per-episode obs bias). The actor's first layer keeps zero weights on the privileged columns
(gradient masked), so on targets (privileged = 0) the actor is what it learned; the critic sees everything.
"""
import argparse, json, os, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize, VecMonitor, VecEnv
import gymnasium as gym
from sim2real.spec import load_spec
from sim2real.worlds.batched import BatchedWorld
from sim2real.worlds.inputs import PolicyInputs
from sim2real.learning.envs import BatchedVecEnv

p = argparse.ArgumentParser()
p.add_argument("--out", required=True); p.add_argument("--steps", type=int, default=2_000_000)
p.add_argument("--seed", type=int, default=0); p.add_argument("--asym", type=int, default=1)
p.add_argument("--n-steps", type=int, default=256); p.add_argument("--batch", type=int, default=256)
p.add_argument("--net", type=int, default=256); p.add_argument("--lr", type=float, default=3e-4)
p.add_argument("--eval-every", type=int, default=100_000)
p.add_argument("--init", default=None)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
spec = load_spec("hopper")
inputs = PolicyInputs(last_action=True)

class Priv(BatchedVecEnv):
    def __init__(self, world, on):
        self.on = on
        self.P = world.draws.shape[1] + len(world.effects.params) + world.effects.obs_dim if hasattr(world.effects, "obs_dim") else None
        super().__init__(world)
        base = world.observation_space
        self.k = self._priv().shape[1]
        lo = np.concatenate([base.low, -np.inf * np.ones(self.k)]).astype(np.float32)
        self.observation_space = gym.spaces.Box(lo, -lo, dtype=np.float32)
    def _priv(self):
        w = self.world
        eff = [q.values.reshape(w.n, -1).astype(float) for q in w.effects.params.values()]
        extra = [w.effects.bias] if hasattr(w.effects, "bias") and np.ndim(w.effects.bias) == 2 else []
        out = np.concatenate([w.draws] + eff + extra, axis=1)
        return out if self.on else np.zeros_like(out)
    def reset(self):
        return np.concatenate([super().reset(), self._priv()], 1).astype(np.float32)
    def step_wait(self):
        obs, r, d, infos = super().step_wait()
        pr = self._priv()
        for i in np.flatnonzero(d):
            infos[i]["terminal_observation"] = np.concatenate([infos[i]["terminal_observation"], pr[i]])
        return np.concatenate([obs, pr], 1).astype(np.float32), r, d, infos

world = BatchedWorld(spec, 16, seed=a.seed, inputs=inputs)
venv = VecNormalize(VecMonitor(Priv(world, bool(a.asym))), gamma=0.99)
k = venv.observation_space.shape[0] - world.observation_space.shape[0]
print("privileged dims", k, flush=True)
model = PPO("MlpPolicy", venv, n_steps=a.n_steps, batch_size=a.batch, n_epochs=10, learning_rate=a.lr, gamma=0.99,
            gae_lambda=0.95, clip_range=0.2, max_grad_norm=0.5, vf_coef=0.5, seed=a.seed, device="cpu",
            policy_kwargs=dict(activation_fn=torch.nn.Tanh, net_arch=dict(pi=[a.net, a.net], vf=[a.net, a.net]),
                               share_features_extractor=False), verbose=0)
first = model.policy.mlp_extractor.policy_net[0]
with torch.no_grad():
    first.weight[:, -k:] = 0.0
first.weight.register_hook(lambda g: torch.cat([g[:, :-k], torch.zeros_like(g[:, -k:])], 1))

def evaluate(target, episodes=10):
    w = BatchedWorld(spec, episodes, world=target, randomize=False, seed=1000, inputs=inputs) if target != "sim" else \
        BatchedWorld(spec, episodes, seed=1000, inputs=inputs)
    obs = w.reset(); ret = np.zeros(episodes); alive = np.ones(episodes, bool)
    while alive.any():
        o = np.concatenate([obs, np.zeros((episodes, k))], 1)
        act, _ = model.predict(venv.normalize_obs(o.astype(np.float32)), deterministic=True)
        obs, r, term, trunc = w.step(act)
        ret += r * alive; alive &= ~(term | trunc)
    return float(ret.mean())

log = open(os.path.join(a.out, "evaluations.csv"), "a"); log.write("step,sim,nominal,real,heavy_torso,wall\n")
t0 = time.time(); done = 0
while done < a.steps:
    model.learn(a.eval_every, reset_num_timesteps=False)
    done = model.num_timesteps
    venv.training = False
    row = [evaluate(t) for t in ("sim", "nominal", "real", "heavy_torso")]
    venv.training = True
    log.write(",".join(map(str, [done] + [round(x, 1) for x in row] + [round(time.time() - t0)])) + "\n"); log.flush()
    model.save(os.path.join(a.out, f"model_{done}.zip")); venv.save(os.path.join(a.out, f"vecnorm_{done}.pkl"))
    print(done, [round(x) for x in row], round(time.time() - t0), flush=True)
