"""The ``calibrate`` strategy's first half: record on the target, fit the sim, continue in the calibrated sim.

1. **Record** ``calibrate_episodes`` episodes of the pretrained policy on the target (deterministic actions),
   into ``calibration/transitions.jsonl`` (a robot's session log, phase ``record``). Their steps count
   against the target budget.
2. **Calibrate**: :func:`sim2real.calibration.run.calibrate` writes ``calibration/calibrated.yaml`` and its
   report.
3. **Adapt in sim**: pretraining continues from the policy for ``calibrate_sim_steps`` steps in the calibrated
   randomised sim (sim steps are free; ``calibration/sim`` is an ordinary pretrain run folder).

The transfer then fine-tunes the adapted policy on the target with what is left of the budget. A resumed run
reuses whatever of the three steps finished.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import gymnasium as gym

from sim2real.calibration.run import calibrate
from sim2real.learning.evaluation import evaluate
from sim2real.learning.loading import Pretrained, load_pretrained, policy_files, policy_model
from sim2real.learning.pretrain import PretrainConfig, pretrain
from sim2real.robot.log import LOG_NAME, TransitionLog, read_log
from sim2real.spec import TaskSpec
from sim2real.worlds.inputs import with_inputs

# Recorded episodes differ from the evaluation episodes (seed 20,000) and between a study's seeds: each seed
# records its own episodes, so the spread over seeds includes what the calibration makes of different data.
RECORD_SEED = 30_000
RECORD_SEEDS_PER_RUN = 1_000


class CommandsOnly(gym.Wrapper):
    """Hides a stand-in world's ``info["applied_action"]`` (what its delay line let through) from the log.

    That is a simulator internal a robot does not report; left in, the log would hold the delayed commands
    and the calibration would find no delay. A robot session's safety layer writes its own (the command as
    sent), so only the stand-in path needs this.
    """

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = {k: v for k, v in info.items() if k != "applied_action"}
        return obs, reward, terminated, truncated, info


def calibrate_and_adapt(cfg, pre: Pretrained, spec: TaskSpec, run_dir: Path, target_factory, session, home_venv,
                        quiet: bool) -> tuple[Pretrained, int, float]:
    """Run the three steps (or reuse those done).

    Returns the adapted policy, the target steps recorded and the recorded episodes' mean return (the pretrained
    policy on the target: where this strategy's curve starts).
    """
    if not (policy_files(pre.path)[0] / "run.json").exists():
        raise ValueError(f"{pre.path}: the calibrate strategy continues a sim2real policy in the calibrated sim; a "
                         "plain SB3 model has no pretraining run to continue (use finetune, or pretrain it first)")
    folder = run_dir / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    log_path = (run_dir / LOG_NAME) if session is not None else (folder / LOG_NAME)

    def recordings():
        return [e for e in read_log(log_path) if e.phase == "record"] if log_path.exists() else []

    # A resumed run records only the complete episodes still missing; an episode cut by a kill stays in the log
    # (its steps were spent on the target and count) and in the data (each window is whole on its own).
    need = cfg.calibrate_episodes - sum(e.complete for e in recordings())
    if need > 0:
        model = policy_model(pre, home_venv)
        if session is not None:
            env, phase = with_inputs(session.borrow(), pre.inputs), session.phase("record")
        else:
            logged = TransitionLog(CommandsOnly(target_factory()), log_path)  # appends to a killed recording
            logged.phase = "record"
            env, phase = with_inputs(logged, pre.inputs), nullcontext()
        done = cfg.calibrate_episodes - need
        with phase:
            evaluate(model, env, need, obs_rms=pre.obs_rms, seed=RECORD_SEED + RECORD_SEEDS_PER_RUN * cfg.seed + done)
        if session is None:
            env.close()
    recorded = recordings()
    steps = sum(e.steps for e in recorded)
    complete = [e for e in recorded if e.complete]
    mean_return = float(sum(float(e.rewards.sum()) for e in complete) / len(complete))
    if not quiet:
        print(f"calibrate: recorded {len(recorded)} episodes, {steps:,} target steps")
    if not (folder / "calibration.json").exists():
        result = calibrate(spec, log_path, folder, phase="record",
                           world=cfg.target if cfg.target in spec.targets else None)
        if not quiet:
            print(f"calibrate: delay {result.delay}, " + ", ".join(f"{k} {v:.3g}" for k, v in result.values.items())
                  + f" ({result.seconds:.0f} s); report {folder / 'report.html'}")
    sim_dir = folder / "sim"
    if cfg.calibrate_sim_steps == 0:  # calibration only: the report and calibrated.yaml, no sim training
        return pre, steps, mean_return
    if not (sim_dir / "model.zip").exists():
        # The policy's own algorithm, network overrides and inputs: the calibrated sim continues that policy.
        pcfg = PretrainConfig(task=str(folder / "calibrated.yaml"), algo=pre.algo, steps=cfg.calibrate_sim_steps,
                              seed=cfg.seed, init_from=str(pre.path), eval_every=cfg.calibrate_sim_steps,
                              eval_episodes=5, eval_world="calibrated",
                              checkpoint_every=max(cfg.calibrate_sim_steps // 4, 1000), threads=cfg.threads,
                              overrides=dict(pre.overrides or {}),
                              inputs=pre.inputs.model_dump() if pre.inputs is not None else {})
        pretrain(pcfg, sim_dir, resume=(sim_dir / "run.json").exists())
    adapted = load_pretrained(sim_dir)
    adapted.spec = spec  # the target worlds are the task's; only the weights and statistics are new
    return adapted, steps, mean_return
