"""sim2real: pretrain in randomised MuJoCo, transfer to a shifted target world, measure what transfer bought."""

from sim2real.make import make_sim_env, make_target_env, register_envs
from sim2real.spec import SpecError, TaskSpec, load_spec

__version__ = "0.1.0"

register_envs()

# Load the submodules that share a name with the API functions below *before* defining them:
# a submodule's first import binds it on the package, which would otherwise shadow the function.
from sim2real import study as _study_module  # noqa: E402,F401
from sim2real import transfer as _transfer_module  # noqa: E402,F401


def pretrain(task: str, out=None, resume: bool = False, **config):
    """Pretrain a policy in the task's randomised sim (``sim2real pretrain``); returns the run folder.

    Keyword arguments are :class:`sim2real.training.PretrainConfig` fields (``steps``, ``seed``, ``randomize``...).
    """
    from sim2real.training import PretrainConfig
    from sim2real.training import pretrain as _pretrain

    return _pretrain(PretrainConfig(task=task, **config), out=out, resume=resume)


def transfer(policy: str, target: str = "real", strategy: str = "finetune", out=None, **config):
    """Carry a pretrained policy to a target world (``sim2real transfer``); returns the run folder.

    Keyword arguments are :class:`sim2real.transfer.TransferConfig` fields (``budget``, ``seed``, ``lr_scale``...).
    """
    from sim2real.transfer import TransferConfig
    from sim2real.transfer import transfer as _transfer

    return _transfer(TransferConfig(policy=str(policy), target=target, strategy=strategy, **config), out=out)


def study(task: str = "hopper", out=None, **config):
    """Run (or resume) a study and write its report (``sim2real study``); returns the study folder."""
    from sim2real.study import StudyConfig, run_study

    return run_study(StudyConfig(task=task, **config), out=out)


__all__ = [
    "SpecError", "TaskSpec", "load_spec", "make_sim_env", "make_target_env", "pretrain", "transfer", "study",
    "__version__",
]
