"""sim2real: pretrain in randomised MuJoCo, transfer to a shifted target world, measure what transfer bought."""

from sim2real.make import make_sim_env, make_target_env, register_envs
from sim2real.spec import SpecError, TaskSpec, load_spec

__version__ = "0.1.0"

register_envs()

__all__ = ["SpecError", "TaskSpec", "load_spec", "make_sim_env", "make_target_env", "__version__"]
