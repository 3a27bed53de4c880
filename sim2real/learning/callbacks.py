"""SB3 callbacks: evaluation on named worlds, atomic checkpoints, sampled randomisation in TensorBoard, progress."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from sim2real.learning.artifacts import atomic_write_text, remove_checkpoint, restart_episodes, save_checkpoint
from sim2real.learning.evaluation import evaluate
from sim2real.learning.selection import EPISODES_LOG, Rule
from sim2real.progress import Progress


class CheckpointCallback(BaseCallback):
    """Checkpoint every ``every`` steps into ``run_dir/checkpoints`` (complete or absent, keeping the last ``keep``).

    Checkpoints are taken at the start of a rollout, i.e. after the previous update: a resumed
    run continues with the next rollout and loses no update. With ``restart_seed`` (Gymnasium envs, whose
    state stays inside their wrappers) the episodes restart from a seed after each checkpoint, in the
    uninterrupted run and in a resumed one alike, so a resume is exact there too.
    """

    def __init__(self, run_dir: Path, every: int, keep: int = 2, restart_seed: int | None = None):
        super().__init__()
        self.dir = run_dir / "checkpoints"
        self.every = every
        self.keep = keep
        self.restart_seed = restart_seed  # Gymnasium envs: restart episodes at each checkpoint (exact resume)
        self._next = None

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self._next:
            seed = None if self.restart_seed is None else self.restart_seed + self.num_timesteps
            save_checkpoint(self.model, self.dir, f"step_{self.num_timesteps:09d}", resumable=True, restart_seed=seed)
            if seed is not None:
                restart_episodes(self.model, seed)
            self._next = (self.num_timesteps // self.every + 1) * self.every
            self._prune()

    def _on_step(self) -> bool:
        return True

    def _prune(self) -> None:
        zips = sorted(self.dir.glob("step_*.zip"))
        for old in zips[: -self.keep]:
            remove_checkpoint(old)


class EvalCallback(BaseCallback):
    """Evaluate on named worlds every ``every`` steps, with the training normalisation frozen.

    Logs ``eval/<world>/mean_return`` (x = steps) and appends to ``evaluations.csv`` (the means) and
    ``evaluations_episodes.jsonl`` (every episode's return and length, in the randomised sim also its draws: another
    rule can be computed afterwards, and ``sim2real failures`` reads where the policy falls). With worlds
    ``nominal`` and a target, also logs ``eval/sim_to_real_gap``.

    ``keep_best``: ``best.zip`` is the policy whose first world's ``select_stat`` (mean or median of the episode
    returns) is the highest so far, among evaluations that clear ``best_floor``. ``keep_evaluated``: every
    evaluated policy is also saved as ``evaluated/step_<N>.zip``, so a rule fixed later can pick among them.

    Each world is one env, evaluated episode after episode: an env passed in is used as it is
    (the caller owns it, e.g. a robot); a factory is built once, on first use, and closed at the
    end of training. ``steps[world]`` counts the env steps evaluation took there.

    ``shares_training_env``: the evaluated env is the very instance training steps (a robot).
    Evaluations then wait for a rollout boundary (never cutting into a rollout being collected),
    run inside ``phase("eval")``, and restart the training episode afterwards.
    """

    def __init__(self, run_dir: Path, worlds: dict[str, gym.Env | Callable[[], gym.Env]], every: int, episodes: int,
                 seed: int = 0, keep_best: bool = False, shares_training_env: bool = False,
                 phase: Callable[[str], AbstractContextManager] | None = None, start_step: int = 0,
                 best_floor: tuple[str, float] | None = None, select_stat: str = "mean",
                 keep_evaluated: bool = False):
        super().__init__()
        floor_world, floor = best_floor if best_floor is not None else ("nominal", None)
        self.rule = Rule(world=next(iter(worlds)), stat=select_stat, floor_world=floor_world, floor=floor)
        self.select_stat = select_stat
        self.keep_evaluated = keep_evaluated
        self.best_floor = best_floor  # (world, return): only evaluations at least this good there may be best
        self.start_step = start_step  # where the curve starts (a budget partly spent before training: > 0)
        self.shared = shares_training_env
        self._ending = False
        self.phase = phase or (lambda name: nullcontext())
        self.csv = run_dir / "evaluations.csv"
        self.episodes_log = run_dir / EPISODES_LOG
        self.worlds = worlds
        self._envs: dict[str, gym.Env] = {w: e for w, e in worlds.items() if isinstance(e, gym.Env)}
        self._owned: list[gym.Env] = []
        self.steps: dict[str, int] = dict.fromkeys(worlds, 0)
        self.eval_costs: list[int] = []  # env steps each evaluation took, all worlds together
        self.last_returns: dict[str, list[float]] = {}
        self.last_lengths: dict[str, list[int]] = {}
        self.last_draws: dict[str, list[dict[str, float]]] = {}  # worlds that report them: the randomised sim
        self.every = every
        self.episodes = episodes
        self.seed = seed
        self._next = 0
        self.last: dict[str, float] = {}
        self.best = -float("inf")
        self.keep_best = keep_best
        # Steps spent evaluating, kept across a kill: a resumed run's total counts them (a robot spent them).
        self.steps_file = run_dir / "eval_steps.json"
        if self.steps_file.exists():
            self.steps.update({w: n for w, n in json.loads(self.steps_file.read_text()).items() if w in self.steps})
        best = run_dir / "best.json"
        if keep_best and best.exists():
            # A resumed run: only a policy that beats the best so far may replace best.zip.
            # (runs from before select_stat recorded only the means: their selection value is the first world's mean)
            record = json.loads(best.read_text())
            self.best = record.get("selection", {}).get("value", record.get(next(iter(worlds)), self.best))

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every  # a resumed run: the next due step, not now
        if self.num_timesteps == self.start_step:
            self.run_eval()  # the starting point of every curve
            self._next = (self.num_timesteps // self.every + 1) * self.every

    def _due(self) -> None:
        if self.num_timesteps >= self._next:
            self.run_eval()
            self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if not self.shared:
            self._due()
        return True

    def _on_rollout_start(self) -> None:
        if self.shared:
            self._due()

    def _restart_training_episode(self) -> None:
        """Evaluation used the training env: start a fresh training episode where SB3 left off."""
        venv = self.model.get_env()
        self.model._last_obs = venv.reset()
        self.model._last_episode_starts = np.ones((venv.num_envs,), dtype=bool)
        if isinstance(venv, VecNormalize):
            self.model._last_original_obs = venv.get_original_obs()

    def _on_training_end(self) -> None:
        self._ending = True  # the final evaluation: no training episode follows it
        if self.last.get("step") != self.num_timesteps:
            self.run_eval()
        for env in self._owned:
            env.close()
        self._owned.clear()
        self._envs = {w: e for w, e in self.worlds.items() if isinstance(e, gym.Env)}

    def _env(self, world: str) -> gym.Env:
        if world not in self._envs:
            self._envs[world] = self.worlds[world]()
            self._owned.append(self._envs[world])
        return self._envs[world]

    def run_eval(self) -> None:
        venv = self.model.get_env()
        obs_rms = venv.obs_rms if isinstance(venv, VecNormalize) else None
        row: dict[str, float] = {"step": self.num_timesteps}
        self.eval_costs.append(0)
        # SB3's train/* values wait in the logger for SB3's own next dump; flushing them here would put them
        # at the evaluation's step. Set them aside, write only the evaluation, then put them back.
        logger = self.logger
        pending = [(d, d.copy()) for d in (logger.name_to_value, logger.name_to_count, logger.name_to_excluded)]
        for d, _ in pending:
            d.clear()
        first = next(iter(self.worlds))
        self.last_returns, self.last_lengths, self.last_draws = {}, {}, {}  # this evaluation's, nothing older
        for world in self.worlds:
            with self.phase("eval"):
                res = evaluate(self.model, self._env(world), self.episodes, obs_rms=obs_rms, seed=self.seed)
            self.steps[world] += res.steps
            self.eval_costs[-1] += res.steps
            self.last_returns[world] = [float(r) for r in res.returns]
            self.last_lengths[world] = [int(n) for n in res.lengths]
            if res.draws is not None:  # 6 significant digits: a range's draw needs no more, and the log stays small
                self.last_draws[world] = [{k: float(f"{v:.6g}") for k, v in d.items()} for d in res.draws]
            row[world] = res.mean
            self.logger.record(f"eval/{world}/mean_return", res.mean)
            self.logger.record(f"eval/{world}/std_return", res.std)
            if world == first:  # SB3's EvalCallback tags, so dashboards built for SB3 and the RL Zoo apply
                self.logger.record("eval/mean_reward", res.mean)
                self.logger.record("eval/mean_ep_length", float(np.mean(res.lengths)))
        targets = [w for w in self.worlds if w not in ("nominal", "sim")]
        if "nominal" in self.worlds and targets:
            self.logger.record("eval/sim_to_real_gap", row["nominal"] - row[targets[0]])
        entry = {"step": self.num_timesteps, "returns": self.last_returns, "lengths": self.last_lengths,
                 "draws": self.last_draws}
        selection = self.rule.value(entry)
        if self.select_stat != "mean":
            self.logger.record(f"eval/{first}/{self.select_stat}_return", selection)
        self.logger.dump(self.num_timesteps)
        for d, saved in pending:
            d.update(saved)
        atomic_write_text(self.steps_file, json.dumps(self.steps))
        new = not self.csv.exists()
        with self.csv.open("a") as f:
            if new:
                f.write(",".join(row) + "\n")
            f.write(",".join(f"{v:.6g}" for v in row.values()) + "\n")
        with self.episodes_log.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        self.last = row
        if self.keep_evaluated:
            save_checkpoint(self.model, self.csv.parent / "evaluated", f"step_{self.num_timesteps:09d}",
                            replay_buffer=False)
        # The rule never admits step 0: the starting point, not a trained policy (with --init-from another run's).
        if self.keep_best and self.rule.admits(entry) and selection >= self.best:  # ties: the later
            # PPO on locomotion can collapse late; keep the best policy by the rule (the first world's statistic).
            self.best = selection
            save_checkpoint(self.model, self.csv.parent, "best")
            record = {**row, "selection": {"world": first, "stat": self.select_stat, "value": selection}}
            atomic_write_text(self.csv.parent / "best.json", json.dumps(record))
        if self.shared and not self._ending:
            self._restart_training_episode()


class RandomizationLogger(BaseCallback):
    """Log the mean of each sampled physics parameter over the episodes that ended (``randomization/*``)."""

    def __init__(self):
        super().__init__()
        self._sums: dict[str, float] = {}
        self._count = 0

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done and "randomization" in info:
                for k, v in info["randomization"].items():
                    self._sums[k] = self._sums.get(k, 0.0) + v
                self._count += 1
        return True

    def _on_rollout_end(self) -> None:
        if self._count:
            for k, v in self._sums.items():
                self.logger.record(f"randomization/{k}", v / self._count)
            self._sums, self._count = {}, 0


class HParamsCallback(BaseCallback):
    """The run's settings as TensorBoard hparams (the HPARAMS tab filters and compares runs by them), written
    once when a run starts, not again on a resume."""

    def __init__(self, hparams: dict, metric: str):
        super().__init__()
        self.hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        self.metric = metric

    def _on_training_start(self) -> None:
        from stable_baselines3.common.logger import HParam

        self.logger.record("hparams", HParam(self.hparams, {self.metric: 0.0}), exclude=("stdout", "log", "json", "csv"))

    def _on_step(self) -> bool:
        return True


class ProgressCallback(BaseCallback):
    """Steps, steps/s, ETA and the latest evaluation on a progress line."""

    def __init__(self, total: int, label: str, eval_cb: EvalCallback | None = None,
                 status: Callable[[], str] | None = None):
        super().__init__()
        self.total = total
        self.label = label
        self.eval_cb = eval_cb
        self.status = status  # more to show, e.g. a robot's step count
        self.bar: Progress | None = None

    def _on_training_start(self) -> None:
        self.bar = Progress(self.total, self.label, start=self.num_timesteps)

    def _on_step(self) -> bool:
        if self.num_timesteps % 256 < self.training_env.num_envs:
            last = self.eval_cb.last if self.eval_cb else {}
            extra = "  ".join(f"{k} {v:.0f}" for k, v in last.items() if k != "step")
            if self.status is not None:
                extra = f"{extra}  {self.status()}".strip()
            self.bar.update(self.num_timesteps, extra)
        return True

    def _on_training_end(self) -> None:
        self.bar.close(self.num_timesteps)


def write_pretrain_layout(run_dir: Path) -> None:
    """A TensorBoard custom-scalars layout for a pretraining run: every world's return on one chart,
    the sim-to-real gap, the randomisation draws and the losses (``tensorboard --logdir RUN``)."""
    layout_dir = run_dir / "tb" / "layout"
    if layout_dir.exists():
        return
    from torch.utils.tensorboard import SummaryWriter  # torch only when the layout is still to be written

    writer = SummaryWriter(str(layout_dir))
    writer.add_custom_scalars({
        "pretraining": {
            "return per world (deterministic evaluation)": ["Multiline", [r"eval/.*/mean_return"]],
            "sim-to-real gap": ["Multiline", [r"eval/sim_to_real_gap"]],
            "training episodes": ["Multiline", [r"rollout/ep_rew_mean", r"rollout/ep_len_mean"]],
            "randomisation (episode means)": ["Multiline", [r"randomization/.*"]],
            "losses": ["Multiline", [r"train/value_loss", r"train/policy_gradient_loss", r"train/critic_loss",
                                     r"train/actor_loss"]],
        }
    })
    writer.close()
