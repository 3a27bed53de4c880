"""Named layer groups over SB3 policies, per-group learning rates, freezing and re-initialisation.

SB3 can keep training a loaded model, but it cannot freeze a layer group cleanly
or give pretrained layers their own learning rate (SB3 issues #338, #1941): its
``_update_learning_rate`` writes one ``lr`` into every param group at each update.
Here each param group carries an ``lr_scale`` that the algorithm subclasses
below re-apply after SB3's write, and frozen parameters are left out of the
optimiser altogether (and ``requires_grad=False``), so they stay bit-identical.

The networks stay SB3's: the layer groups are names over its modules.

============  =========================================  ==================================
algorithm     actor hidden layers / output               critic hidden layers / output
============  =========================================  ==================================
PPO           mlp_extractor.policy_net / action_net,     mlp_extractor.value_net / value_net
              log_std
SAC           actor.latent_pi / actor.mu, actor.log_std  critic.qf*[:-1] / critic.qf*[-1]
TD3           actor.mu[:-1] / actor.mu[-1]               critic.qf*[:-1] / critic.qf*[-1]
============  =========================================  ==================================

The lowest ``k`` hidden layers are the *features*; the hidden layers above them and
the output layers are the *head*.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

GROUPS = ("actor_features", "actor_head", "critic_features", "critic_head")


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


@dataclass
class LayerGroups:
    """The layers of one SB3 policy, by role. Lists hold ``nn.Linear`` modules (plus free parameters)."""

    actor_hidden: list[nn.Linear]
    actor_output: list[nn.Module | nn.Parameter]
    critic_hidden: list[list[nn.Linear]]  # one list per critic (SAC/TD3 have two Q-networks)
    critic_output: list[nn.Module]
    feature_layers: int = 1

    @property
    def n_hidden(self) -> int:
        return len(self.actor_hidden)

    def modules_of(self, group: str) -> list[nn.Module | nn.Parameter]:
        k = self.feature_layers
        if group == "actor_features":
            return list(self.actor_hidden[:k])
        if group == "actor_head":
            return list(self.actor_hidden[k:]) + list(self.actor_output)
        if group == "critic_features":
            return [layer for q in self.critic_hidden for layer in q[:k]]
        if group == "critic_head":
            return [layer for q in self.critic_hidden for layer in q[k:]] + list(self.critic_output)
        raise ValueError(f"unknown layer group {group!r}; groups: {', '.join(GROUPS)}")

    def params_of(self, group: str) -> list[nn.Parameter]:
        out: list[nn.Parameter] = []
        for m in self.modules_of(group):
            out.extend([m] if isinstance(m, nn.Parameter) else list(m.parameters()))
        return out

    def group_of(self) -> dict[int, str]:
        """``id(param) -> group name`` for every grouped parameter."""
        return {id(p): g for g in GROUPS for p in self.params_of(g)}


def layer_groups(model: BaseAlgorithm, feature_layers: int = 1) -> LayerGroups:
    """Name the layers of an SB3 PPO, SAC or TD3 model's policy."""
    policy = model.policy
    if isinstance(model, PPO):
        groups = LayerGroups(
            actor_hidden=_linears(policy.mlp_extractor.policy_net),
            actor_output=[policy.action_net] + ([policy.log_std] if isinstance(policy.log_std, nn.Parameter) else []),
            critic_hidden=[_linears(policy.mlp_extractor.value_net)],
            critic_output=[policy.value_net],
        )
    elif isinstance(model, SAC):
        groups = LayerGroups(
            actor_hidden=_linears(policy.actor.latent_pi),
            actor_output=[policy.actor.mu, policy.actor.log_std],
            critic_hidden=[_linears(q)[:-1] for q in policy.critic.q_networks],
            critic_output=[_linears(q)[-1] for q in policy.critic.q_networks],
        )
    elif isinstance(model, TD3):
        actor = _linears(policy.actor.mu)
        groups = LayerGroups(
            actor_hidden=actor[:-1],
            actor_output=[actor[-1]],
            critic_hidden=[_linears(q)[:-1] for q in policy.critic.q_networks],
            critic_output=[_linears(q)[-1] for q in policy.critic.q_networks],
        )
    else:
        raise TypeError(f"layer groups are defined for PPO, SAC and TD3, not {type(model).__name__}")
    if not 0 <= feature_layers <= groups.n_hidden:
        raise ValueError(
            f"--feature-layers {feature_layers}: the policy has {groups.n_hidden} hidden layers; "
            f"choose 0..{groups.n_hidden}"
        )
    groups.feature_layers = feature_layers
    return groups


def _optimizers(model: BaseAlgorithm) -> dict[str, tuple[torch.optim.Optimizer, list[nn.Parameter]]]:
    """SB3's optimisers by attribute path, each with the parameters SB3 gave it (its standard order)."""
    if isinstance(model, PPO):
        return {"policy.optimizer": (model.policy.optimizer, list(model.policy.parameters()))}
    actor, critic = model.policy.actor, model.policy.critic
    # SB3 leaves a shared features extractor out of the critic's optimiser.
    if getattr(model.policy, "share_features_extractor", False):
        critic_params = [p for n, p in critic.named_parameters() if "features_extractor" not in n]
    else:
        critic_params = list(critic.parameters())
    return {
        "actor.optimizer": (actor.optimizer, list(actor.parameters())),
        "critic.optimizer": (critic.optimizer, critic_params),
    }


def regroup_optimizers(
    model: BaseAlgorithm,
    groups: LayerGroups,
    lr_scales: dict[str, float],
    frozen: set[str],
    frozen_params: list[nn.Parameter] = (),
) -> None:
    """Rebuild SB3's optimisers with one param group per layer group.

    Args:
        lr_scales: group name -> factor on the algorithm's learning rate (default 1).
        frozen: groups to freeze: ``requires_grad=False`` and left out of the optimiser.
        frozen_params: further parameters to freeze the same way (e.g. the k lowest layers).
    """
    owner = groups.group_of()
    for p in model.policy.parameters():
        p.requires_grad_(True)
    for p in [q for g in frozen for q in groups.params_of(g)] + list(frozen_params):
        p.requires_grad_(False)
    for path, (old, params) in _optimizers(model).items():
        buckets: dict[str, list[nn.Parameter]] = {}
        for p in params:
            if p.requires_grad:
                buckets.setdefault(owner.get(id(p), "other"), []).append(p)
        param_groups = [
            {"params": ps, "name": name, "lr_scale": lr_scales.get(name, 1.0)} for name, ps in buckets.items()
        ]
        new = type(old)(param_groups, **old.defaults)
        for group in new.param_groups:  # start at the scaled rate, before SB3's first write
            group["lr"] = old.defaults["lr"] * group["lr_scale"]
        holder, attr = _resolve(model, path)
        setattr(holder, attr, new)


def _resolve(model: BaseAlgorithm, path: str):
    """``"actor.optimizer"`` -> (model.actor, "optimizer"): SB3's own names for its state dicts."""
    obj = model
    parts = path.split(".")
    for part in parts[:-1]:
        obj = getattr(obj, part)
    return obj, parts[-1]


def reinitialize(groups: LayerGroups, names: list[str], seed: int | None = None) -> None:
    """Re-initialise the Linear layers of the named groups (PyTorch's default init)."""
    if seed is not None:
        torch.manual_seed(seed)
    for g in names:
        for m in groups.modules_of(g):
            if isinstance(m, nn.Linear):
                m.reset_parameters()


def reset_exploration(model: BaseAlgorithm, value: float) -> None:
    """Reset exploration on transfer: PPO's ``log_std`` to ``value``; SAC's entropy coefficient to ``exp(value)``."""
    with torch.no_grad():
        if isinstance(model, PPO) and isinstance(model.policy.log_std, nn.Parameter):
            model.policy.log_std.fill_(value)
        elif isinstance(model, SAC) and getattr(model, "log_ent_coef", None) is not None:
            model.log_ent_coef.fill_(value)
            model.ent_coef_optimizer = type(model.ent_coef_optimizer)([model.log_ent_coef], **model.ent_coef_optimizer.defaults)


class LayerGroupLRMixin:
    """Re-applies each param group's ``lr_scale`` after SB3 writes the scheduled rate.

    With ``critic_warmup_updates = N`` (PPO), the first N training phases move
    only the critic: actor groups get a learning rate of 0.
    """

    critic_warmup_updates: int = 0
    _lr_updates: int = 0

    def _update_learning_rate(self, optimizers):
        super()._update_learning_rate(optimizers)
        self._lr_updates += 1
        warming = self._lr_updates <= self.critic_warmup_updates
        for opt in optimizers if isinstance(optimizers, list) else [optimizers]:
            for g in opt.param_groups:
                scale = g.get("lr_scale", 1.0)
                if warming and str(g.get("name", "")).startswith("actor"):
                    scale = 0.0
                g["lr"] *= scale
                if "name" in g:
                    self.logger.record(f"train/lr/{g['name']}", g["lr"])

    def get_parameters(self) -> dict[str, dict]:
        """State dicts as SB3 would write them: each optimiser in its single-group standard form.

        This keeps every checkpoint loadable with plain ``PPO.load`` / ``SAC.load``
        (whose optimisers have one param group), with the Adam moments preserved.
        """
        params = super().get_parameters()
        for path, (opt, standard) in _optimizers(self).items():
            if path in params and (len(opt.param_groups) > 1 or any("lr_scale" in g for g in opt.param_groups)):
                fresh = type(opt)([{"params": standard}], **opt.defaults)
                for p in standard:
                    if p in opt.state:
                        fresh.state[p] = opt.state[p]
                params[path] = fresh.state_dict()
        return params

    def set_parameters(self, load_path_or_dict, exact_match: bool = True, device="auto") -> None:
        """The reverse of :meth:`get_parameters`: a saved single-group optimiser back into this model's groups."""
        from stable_baselines3.common.save_util import load_from_zip_file

        params = load_path_or_dict if isinstance(load_path_or_dict, dict) else \
            load_from_zip_file(load_path_or_dict, device=device, load_data=False)[1]  # weights only
        params = dict(params)
        grouped = {}
        for path, (opt, standard) in _optimizers(self).items():
            if path in params and (len(opt.param_groups) > 1 or any("lr_scale" in g for g in opt.param_groups)):
                fresh = type(opt)([{"params": standard}], **opt.defaults)
                fresh.load_state_dict(params.pop(path))
                grouped[path] = (opt, fresh)
        super().set_parameters(params, exact_match=False, device=device)
        if exact_match:  # the networks themselves must fit exactly (SB3's check skipped the popped optimisers)
            for name, state in params.items():
                module = self
                for part in name.split("."):
                    module = getattr(module, part)
                if isinstance(module, torch.nn.Module):
                    module.load_state_dict(state, strict=True)
        for opt, fresh in grouped.values():
            for p, state in fresh.state.items():
                opt.state[p] = state


class GroupedPPO(LayerGroupLRMixin, PPO):
    """SB3 PPO whose param groups keep their own learning-rate scale."""


class GroupedSAC(LayerGroupLRMixin, SAC):
    """SB3 SAC whose param groups keep their own learning-rate scale."""


class GroupedTD3(LayerGroupLRMixin, TD3):
    """SB3 TD3 whose param groups keep their own learning-rate scale."""


GROUPED = {"ppo": GroupedPPO, "sac": GroupedSAC, "td3": GroupedTD3}
