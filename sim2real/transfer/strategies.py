"""The strategy registry: how a pretrained policy is carried to the target, one entry per strategy.

============  ===========================================================  ==========================
strategy      what trains                                                  textbook case
============  ===========================================================  ==========================
zero-shot     nothing: the pretrained policy is evaluated on the target    (reference)
scratch       a fresh policy: same algorithm, architecture and budget,     (baseline)
              the task's own hyperparameters
freeze        feature layers frozen; head (and the critic) train           1: small data, similar
reinit-top    lowest k layers kept and frozen; everything above re-init    2: small data, different
finetune      all layers; features at lr x lr_scale, head at lr            3: large data, similar
full          all layers at the full rate from the pretrained start        4: large data, different
calibrate     records target episodes, fits the sim, trains there, then    (see sim2real.calibration)
              finetunes; the recorded steps count against the budget
auto          measures the case, then runs one of the four above           -
============  ===========================================================  ==========================

A new strategy is one :class:`Strategy` entry in :data:`STRATEGIES`: its ``prepare`` function
sets freezing, learning-rate scales and re-initialisation on an SB3 model and says what it did.
The parameters it reads (``feature_layers``, ``lr_scale``, ...) are fields of the transfer config,
so a study can pass them through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# The registry is read by the CLI, the study and the report, which need no torch: the recipes import the
# learning stack when they run.
if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from sim2real.learning.groups import LayerGroups


@dataclass(frozen=True)
class Recipe:
    """What a strategy asks of the optimiser: groups to freeze, learning-rate scales, extra frozen params."""

    what: str
    frozen: frozenset[str] = frozenset()
    lr_scales: dict[str, float] | None = None
    frozen_params: tuple = ()


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    case: int | None = None  # the textbook case it answers (1-4), if any
    trains: bool = True  # zero-shot does not
    fresh: bool = False  # scratch: a new network, not the pretrained one
    prepare: Callable[[BaseAlgorithm, LayerGroups, Any], Recipe] | None = None
    params: tuple[str, ...] = ()  # transfer-config fields it reads


def sync_target_networks(model: BaseAlgorithm) -> None:
    """SAC/TD3 keep target copies of the critic (and TD3 of the actor): after a re-initialisation they
    must start from the new weights, or the first updates bootstrap from the discarded network."""
    import torch

    with torch.no_grad():
        for online, target in (("critic", "critic_target"), ("actor", "actor_target")):
            if getattr(model, target, None) is not None:
                getattr(model, target).load_state_dict(getattr(model, online).state_dict())


def _freeze(model: BaseAlgorithm, groups: LayerGroups, cfg) -> Recipe:
    frozen = {"actor_features"} | ({"critic_features"} if cfg.freeze_critic_features else set())
    what = f"actor features (lowest {cfg.feature_layers} layers) frozen, head trains"
    if cfg.reinit_head:
        import torch

        torch.manual_seed(cfg.seed)
        for layer in groups.actor_output:
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()  # a new action layer on top of the kept features
        sync_target_networks(model)
        what += "; action layer re-initialised"
    return Recipe(what, frozenset(frozen))


def _finetune(model: BaseAlgorithm, groups: LayerGroups, cfg) -> Recipe:
    what = f"all layers train; features at lr x {cfg.lr_scale}"
    frozen_params: tuple = ()
    if cfg.freeze_layers:
        from sim2real.learning.groups import layer_groups

        lowest = layer_groups(model, cfg.freeze_layers)
        frozen_params = tuple(lowest.params_of("actor_features") + lowest.params_of("critic_features"))
        what += f"; lowest {cfg.freeze_layers} layers frozen"
    return Recipe(what, lr_scales={"actor_features": cfg.lr_scale, "critic_features": cfg.lr_scale},
                  frozen_params=frozen_params)


def _reinit_top(model: BaseAlgorithm, groups: LayerGroups, cfg) -> Recipe:
    from sim2real.learning.groups import reinitialize

    reinitialize(groups, ["actor_head", "critic_head"], seed=cfg.seed)
    sync_target_networks(model)
    return Recipe(f"lowest {cfg.feature_layers} layers kept and frozen; everything above re-initialised",
                  frozenset({"actor_features", "critic_features"}))


def _full(model: BaseAlgorithm, groups: LayerGroups, cfg) -> Recipe:
    return Recipe("all layers train at the full rate")


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("zero-shot", "the pretrained policy on the target, no training", trains=False),
    Strategy("scratch", "a fresh policy: same algorithm, architecture and budget, the task's own hyperparameters",
             fresh=True),
    Strategy("freeze", "features frozen, a head trains", case=1, prepare=_freeze,
             params=("feature_layers", "reinit_head", "freeze_critic_features")),
    Strategy("reinit-top", "lowest layers kept and frozen, the rest re-initialised", case=2, prepare=_reinit_top,
             params=("feature_layers",)),
    Strategy("finetune", "all layers; features at a lower learning rate", case=3, prepare=_finetune,
             params=("feature_layers", "lr_scale", "freeze_layers")),
    Strategy("full", "all layers at the full rate", case=4, prepare=_full),
    Strategy("calibrate", "record a few target episodes, fit the sim to them (mujoco.sysid), continue in the "
             "calibrated sim, then fine-tune on the target", prepare=_finetune,
             params=("calibrate_episodes", "calibrate_sim_steps", "feature_layers", "lr_scale", "freeze_layers")),
    Strategy("auto", "measure the case, then run its strategy"),
)}
CASE_STRATEGY: dict[int, str] = {s.case: s.name for s in STRATEGIES.values() if s.case is not None}


def apply_strategy(model: BaseAlgorithm, strategy: str, cfg) -> str:
    """Set freezing, learning-rate scales and re-initialisation; return a one-line description."""
    entry = STRATEGIES.get(strategy)
    if entry is not None and entry.fresh:
        return "a fresh policy"
    if entry is None or entry.prepare is None:
        raise ValueError(f"strategy {strategy!r} has no training recipe; trainable: "
                         f"{', '.join(n for n, s in STRATEGIES.items() if s.prepare or s.fresh)}")
    from sim2real.learning.groups import layer_groups, regroup_optimizers

    groups = layer_groups(model, cfg.feature_layers)
    recipe = entry.prepare(model, groups, cfg)
    regroup_optimizers(model, groups, recipe.lr_scales or {}, set(recipe.frozen), list(recipe.frozen_params))
    return recipe.what
