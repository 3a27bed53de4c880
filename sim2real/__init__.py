"""sim2real: pretrain in randomised MuJoCo, transfer to a shifted target world, measure what transfer bought.

``import sim2real`` stays light (no torch, no SB3): it loads the specs, registers every task's
worlds as Gymnasium ids, and names the API. ``pretrain``, ``run_transfer`` and ``run_study`` import
the learning stack on first use.

Layers, each importing only those below it::

    cli, study, report, metrics, robustness, executors, describe   the top
    transfer/   cases, the strategy registry, the calibrate strategy's adaptation, the transfer run
    calibration/  fitting the sim to recorded target data (mujoco.sysid), the calibrated spec and report
    robot/      a robot session: safety layer, transition log, remote link, recording, export
    learning/   SB3: layer groups, artifacts, policy loading, callbacks, evaluation, pretraining
    worlds/     MuJoCo worlds: physics, effects, task variants, policy inputs, make/register
    spec, progress, files, ...                                      the base (no sim2real imports above it)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from sim2real.spec import SpecError, TaskSpec, load_spec
from sim2real.worlds.make import make_sim_env, make_target_env, register_envs, route_mujoco_warnings

__version__ = "0.2.0"

register_envs()
route_mujoco_warnings()

# name -> (module, attribute), imported on first access (PEP 562) so `import sim2real` loads no torch.
_LAZY = {
    "pretrain": ("sim2real.learning.pretrain", "pretrain"),
    "PretrainConfig": ("sim2real.learning.pretrain", "PretrainConfig"),
    "run_transfer": ("sim2real.transfer.run", "transfer"),
    "TransferConfig": ("sim2real.transfer.run", "TransferConfig"),
    "run_study": ("sim2real.study", "run_study"),
    "StudyConfig": ("sim2real.study", "StudyConfig"),
    "load_pretrained": ("sim2real.learning.loading", "load_pretrained"),
    "evaluate": ("sim2real.learning.evaluation", "evaluate"),
    "calibrate": ("sim2real.calibration.run", "calibrate"),
}

if TYPE_CHECKING:
    from sim2real.calibration.run import calibrate
    from sim2real.learning.evaluation import evaluate
    from sim2real.learning.loading import load_pretrained
    from sim2real.learning.pretrain import PretrainConfig, pretrain
    from sim2real.study import StudyConfig, run_study
    from sim2real.transfer.run import TransferConfig
    from sim2real.transfer.run import transfer as run_transfer


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sim2real' has no attribute {name!r}")


__all__ = [
    "SpecError", "TaskSpec", "load_spec", "make_sim_env", "make_target_env", "__version__",
    "pretrain", "PretrainConfig", "run_transfer", "TransferConfig", "run_study", "StudyConfig", "load_pretrained",
    "evaluate", "calibrate",
]
