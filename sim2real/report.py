"""The transfer report: metrics.json, plots, report.md and a self-contained report.html.

Everything is rebuilt from the run folders alone (``sim2real report DIR``).
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sim2real.files import atomic_write_text  # noqa: E402
from sim2real.metrics import (  # noqa: E402
    FINAL_K,
    THRESHOLD_FRACTION,
    Curve,
    bootstrap_cache,
    probability_of_improvement,
    score_distribution,
    seen_before,
    strategy_metrics,
)
from sim2real.pages import md_table, write_report  # noqa: E402
from sim2real.spec import load_spec  # noqa: E402
from sim2real.transfer.cases import SIMILARITY_THRESHOLD, classify  # noqa: E402
from sim2real.worlds.inputs import WithInputs  # noqa: E402
from sim2real.worlds.make import EnvFactory, make_target_env  # noqa: E402

ORDER = ["zero-shot", "freeze", "reinit-top", "finetune", "full", "calibrate", "auto", "scratch"]
COLORS = {"zero-shot": "#7f7f7f", "scratch": "#d62728", "freeze": "#1f77b4", "finetune": "#2ca02c",
          "reinit-top": "#9467bd", "full": "#ff7f0e", "auto": "#8c564b", "calibrate": "#17becf"}
DEFINITIONS = """\
- **zero-shot return**: the pretrained policy on the target world, no target training.
- **jumpstart**: return at target step 0, strategy minus scratch.
- **final return**: mean of the last 3 evaluations of a run; across seeds the **IQM** (interquartile mean)
  with a 95% stratified-bootstrap interval (rliable; with 3 seeds the IQM equals the mean).
- **asymptotic gain**: final return, strategy minus scratch (means over seeds).
- **area ratio**: (area under the strategy's mean curve − area under scratch's) / |area under scratch's|,
  over the same target steps. Above 0: transfer collected more return over the budget.
- **time to threshold**: target steps until the mean curve first reaches the threshold (90% of scratch's
  final return unless set otherwise); **speed-up** = scratch's time / the strategy's time
  (∞: the strategy starts above it; "never": the curve does not reach it within the budget).
- **P(improve)**: probability that a run of the strategy ends above a run of scratch (Mann–Whitney), with a
  95% bootstrap interval.
- **sim-to-real gap**: return of the pretrained policy in the nominal sim minus its zero-shot return on the target.
"""


# ---------------------------------------------------------------- reading runs


def _rank(strategy: str) -> tuple[int, str]:
    """Report order: the strategies' own, a variant (finetune@lr_scale=0.3) right after its strategy."""
    name = strategy.partition("@")[0]
    return (ORDER.index(name) if name in ORDER else len(ORDER)), strategy


# Variants of a strategy get colours of their own, the same in every figure of a report.
VARIANT_COLORS = ["#bcbd22", "#e377c2", "#8c564b", "#393b79", "#637939", "#843c39", "#7b4173", "#3182bd"]


def color_of(strategy: str) -> str:
    if strategy in COLORS:
        return COLORS[strategy]
    return VARIANT_COLORS[zlib.crc32(strategy.encode()) % len(VARIANT_COLORS)]


def read_curve(run_dir: Path) -> Curve | None:
    path = run_dir / "evaluations.csv"
    if not path.exists():
        return None
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    key = "target" if "target" in rows[0] else list(rows[0])[1]
    return Curve([float(r["step"]) for r in rows], [float(r[key]) for r in rows])


def collect(study_dir: Path) -> dict[str, dict[str, list[tuple[int, Curve]]]]:
    """target -> strategy -> [(seed, curve)] for every finished run."""
    out: dict[str, dict[str, list[tuple[int, Curve]]]] = {}
    for result in sorted((study_dir / "runs").glob("*/*/s*/result.json")):
        run_dir = result.parent
        curve = read_curve(run_dir)
        if curve is None:
            continue
        target, strategy, seed = run_dir.parent.parent.name, run_dir.parent.name, int(run_dir.name[1:])
        out.setdefault(target, {}).setdefault(strategy, []).append((seed, curve))
    return out


def pretrained_sim_return(study_dir: Path, study: dict) -> float:
    """The pretrained policy's return in the nominal sim (cached in pretrained.json)."""
    cache = study_dir / "pretrained.json"
    if cache.exists():
        return json.loads(cache.read_text())["nominal_return"]
    from sim2real.learning.evaluation import evaluate  # torch and SB3 only when the cache is missing
    from sim2real.learning.loading import load_for_evaluation

    cfg = study["config"]
    pre, spec, model = load_for_evaluation(cfg["policy"], cfg.get("task"))
    env_fn = WithInputs(EnvFactory(make_target_env, spec.path, "nominal"), pre.inputs)
    episodes = cfg.get("eval_episodes") or spec.budgets.eval_episodes
    res = evaluate(model, env_fn, episodes, obs_rms=pre.obs_rms, seed=20_000)
    atomic_write_text(cache, json.dumps({"nominal_return": res.mean, "returns": res.returns, "policy": cfg["policy"]}))
    return res.mean


# ---------------------------------------------------------------- metrics and cases


def compute_metrics(study_dir: Path, threshold_fraction: float = THRESHOLD_FRACTION, similarity_threshold: float | None = None,
                    runs: dict | None = None) -> dict:
    study = json.loads((study_dir / "study.json").read_text())
    cfg = study["config"]
    spec = load_spec(cfg["task"])
    runs = collect(study_dir) if runs is None else runs
    sim_return = pretrained_sim_return(study_dir, study)
    out = {"task": cfg["task"], "budget_steps": cfg["budget_steps"], "policy": cfg["policy"],
           "sim_return": sim_return, "threshold_fraction": threshold_fraction, "targets": {}}
    for target, by_strategy in runs.items():
        scratch = [c for _, c in by_strategy.get("scratch", [])]
        strategies = {s: strategy_metrics([c for _, c in rs], scratch if s != "scratch" else None, threshold_fraction)
                      for s, rs in sorted(by_strategy.items(), key=lambda kv: _rank(kv[0]))}
        if "zero-shot" in strategies:  # its episodes' spread: the one evaluation's only uncertainty
            first = sorted((study_dir / "runs" / target.replace("/", "__") / "zero-shot").glob("s*/result.json"))
            if first:
                strategies["zero-shot"]["episode_returns"] = json.loads(first[0].read_text())["final_returns"]
        zs_source = by_strategy.get("zero-shot") or by_strategy.get("freeze") or by_strategy.get("finetune") or []
        zero_shot = float(np.mean([c.start for _, c in zs_source])) if zs_source else math.nan
        task_changed = bool(target in spec.targets and spec.targets[target].task_variant)
        entry = {"zero_shot_return": zero_shot, "sim_to_real_gap": sim_return - zero_shot,
                 "task_changed": task_changed, "strategies": strategies}
        if not math.isnan(zero_shot):
            similarity = similarity_threshold if similarity_threshold is not None else cfg.get(
                "similarity_threshold", SIMILARITY_THRESHOLD)
            decision = classify(spec, cfg["budget_steps"], sim_return, zero_shot, task_changed, similarity)
            entry["case"] = {"case": decision.case, "recommended": decision.strategy, "reason": decision.reason,
                             "large_budget": decision.large_budget, "similar": decision.similar}
            entry["verdict"] = verdict(strategies, decision.strategy)
        for strategy, m in strategies.items():
            m["target_steps_used"] = _target_steps_used(study_dir, target, strategy)
        out["targets"][target] = entry
    return out


def _target_steps_used(study_dir: Path, target: str, strategy: str) -> float | None:
    """Mean target steps per run, training and evaluation (what a robot would have spent); None for old runs."""
    totals = []
    for result in (study_dir / "runs" / target / strategy).glob("s*/result.json"):
        steps = json.loads(result.read_text()).get("target_steps")
        if steps:
            totals.append(steps["total"])
    return float(np.mean(totals)) if totals else None


def verdict(strategies: dict, recommended: str) -> dict:
    """Did the measured results agree with the textbook recommendation? Said plainly."""
    measured = strategies
    best = max(measured, key=lambda s: measured[s]["final_return_iqm"])
    lo_best = measured[best]["final_return_ci95"][0]
    v: dict = {"best_measured": best}
    if recommended not in measured:
        v["agrees"] = None
        v["text"] = f"The recommended strategy ({recommended}) was not part of this study; the best measured was {best}."
        return v
    rec = measured[recommended]
    tied = rec["final_return_ci95"][1] >= lo_best
    v["agrees"] = best == recommended or tied
    if best == recommended:
        v["text"] = f"Held: {recommended}, the recommended strategy, had the highest final return."
    elif tied:
        v["text"] = (f"Held within noise: {best} ended highest, but {recommended}'s 95% interval overlaps it "
                     f"({rec['final_return_iqm']:.0f} vs {measured[best]['final_return_iqm']:.0f}).")
    else:
        v["text"] = (f"Did not hold: {best} ended clearly above the recommended {recommended} "
                     f"({measured[best]['final_return_iqm']:.0f} vs {rec['final_return_iqm']:.0f}, intervals apart).")
    if "finetune" in measured and "freeze" in measured and "prob_improvement" in measured["finetune"]:
        ft, fr = measured["finetune"]["final_returns"], measured["freeze"]["final_returns"]
        p, lo, hi = probability_of_improvement(ft, fr)
        v["finetune_beats_freeze"] = {"p": p, "ci95": [lo, hi]}
        word = "held" if lo > 0.5 else ("did not hold" if hi < 0.5 else "was not resolved by these seeds")
        v["finetune_text"] = (f"'Fine-tuning beats feature extraction' {word}: P(finetune > freeze) = {p:.2f} "
                              f"[{lo:.2f}, {hi:.2f}].")
    return v


# ---------------------------------------------------------------- plots


def _iqm_over_seeds(y: np.ndarray) -> np.ndarray:
    """IQM along the first axis (seeds; 25% trimmed each side, as rliable's aggregate_iqm), per step."""
    cut = int(0.25 * y.shape[-2])
    ys = np.sort(y, axis=-2)
    return ys[..., cut:y.shape[-2] - cut, :].mean(axis=-2)


def _band(curves: list[Curve], reps: int = 1000, seed: int = 0):
    """Per evaluation step: the IQM across seeds (the statistic of the metrics table) and its 95% bootstrap band."""
    n = min(c.steps.size for c in curves)
    y = np.array([c.returns[:n] for c in curves])
    iqm = _iqm_over_seeds(y)
    if len(curves) == 1:
        return curves[0].steps[:n], iqm, iqm, iqm
    rng = np.random.default_rng(seed)
    boots = _iqm_over_seeds(y[rng.integers(0, len(curves), size=(reps, len(curves)))])
    return curves[0].steps[:n], iqm, np.percentile(boots, 2.5, axis=0), np.percentile(boots, 97.5, axis=0)


def plot_curves(runs: dict, study_dir: Path, budget: int) -> list[Path]:
    paths = []
    for target, by_strategy in runs.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for strategy, rs in sorted(by_strategy.items(), key=lambda kv: _rank(kv[0])):
            curves = [c for _, c in rs]
            color = color_of(strategy)
            if strategy == "zero-shot":
                ax.axhline(np.mean([c.start for c in curves]), color=color, ls="--", label="zero-shot")
                continue
            x, m, lo, hi = _band(curves)
            for c in curves:  # every seed, thin, under the IQM and its band
                ax.plot(c.steps, c.returns, color=color, lw=0.6, alpha=0.35)
            ax.plot(x, m, color=color, label=f"{strategy} (n={len(curves)})")
            ax.fill_between(x, lo, hi, color=color, alpha=0.2)
        ax.set_xlabel("target environment steps")
        ax.set_ylabel("return on the target (IQM, 95% CI; thin: seeds)")
        ax.set_title(f"learning curves on '{target}'")
        ax.set_xlim(0, budget)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = study_dir / f"curves_{target}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_intervals(metrics: dict, study_dir: Path) -> Path:
    targets = list(metrics["targets"])
    fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets), 3.2), squeeze=False)
    for ax, target in zip(axes[0], targets):
        strategies = metrics["targets"][target]["strategies"]
        names = list(strategies)
        for i, s in enumerate(names):
            m = strategies[s]
            lo, hi = m["final_return_ci95"]
            ax.plot([lo, hi], [i, i], color=color_of(s), lw=6, alpha=0.5, solid_capstyle="butt")
            ax.plot(m["final_return_iqm"], i, "|", color="k", ms=14)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("final return: IQM and 95% CI")
        ax.set_title(target)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = study_dir / "intervals.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rliable(metrics: dict, study_dir: Path, reps: int = 500) -> list[Path]:
    """rliable's two standard figures per target: the performance profile of final returns (fraction of runs
    above each return, 95% bootstrap band) and P(strategy beats scratch) with its interval (already in metrics).
    A figure whose numbers have not changed since the last report is kept (rliable's plotting imports seaborn
    and scipy: seconds)."""
    paths = []
    for target, t in metrics["targets"].items():
        strategies = {s: m for s, m in t["strategies"].items() if s != "zero-shot" and m.get("final_returns")}
        if not strategies:
            continue
        path = study_dir / f"rliable_{target}.png"
        paths.append(path)
        drawn_from = [target, reps, sorted((s, m["final_returns"], m.get("prob_improvement"),
                                            m.get("prob_improvement_ci95")) for s, m in strategies.items())]
        if seen_before("rliable figure", drawn_from) and path.exists():
            continue
        _draw_rliable(target, strategies, path, reps)
    return paths


def _draw_rliable(target: str, strategies: dict, path: Path, reps: int) -> None:
    from matplotlib.lines import Line2D
    from rliable import library as rly
    from rliable import plot_utils

    scores = {s: np.asarray(m["final_returns"], dtype=float)[:, None] for s, m in strategies.items()}
    everything = np.concatenate([v.ravel() for v in scores.values()])
    taus = np.linspace(everything.min() - 1e-6, everything.max(), 60)
    profiles, cis = rly.create_performance_profile(scores, taus, reps=reps, custom_profile_func=score_distribution)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, ax=axes[0],
                                         colors={s: color_of(s) for s in scores},
                                         xlabel="final return on the target (τ)",
                                         ylabel="fraction of runs above τ")
    axes[0].legend([Line2D([], [], color=color_of(k)) for k in scores], list(scores), fontsize=8,
                   loc="lower left")
    axes[0].set_title(f"performance profile, '{target}'", fontsize=10)
    # rliable splits "X<sep>Y": a separator no strategy label holds (a variant's settings have commas).
    sep = " vs "
    pairs = {f"{s}{sep}scratch": m["prob_improvement"] for s, m in strategies.items()
             if m.get("prob_improvement") is not None}
    if pairs:
        intervals = {f"{s}{sep}scratch": np.array(strategies[s]["prob_improvement_ci95"])[:, None]
                     for s in strategies if f"{s}{sep}scratch" in pairs}
        plot_utils.plot_probability_of_improvement(pairs, intervals, ax=axes[1], pair_separator=sep,
                                                   colors=[color_of(p.split(sep)[0]) for p in pairs])
        axes[1].set_xlim(0, 1.02)
        axes[1].set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        axes[1].set_title("P(a run of X ends above a run of scratch)", fontsize=10)
    else:
        axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- the documents


def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "never"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if isinstance(v, (int, float)):
        return f"{0.0 if round(v, digits) == 0 else v:,.{digits}f}"  # no "-0"
    return str(v)


def metrics_table(metrics: dict) -> list[list[str]]:
    head = ["target", "strategy", "seeds", "final IQM [95% CI]", "jumpstart", "asymptotic gain", "area ratio",
            "steps to threshold", "speed-up", "P(improve) [95% CI]", "target steps used per run"]
    rows = [head]
    for target, t in metrics["targets"].items():
        for s, m in t["strategies"].items():
            ci = m["final_return_ci95"]
            p = m.get("prob_improvement")
            if s == "zero-shot":  # the same deterministic episodes for every seed: one measurement, no interval
                episodes = m.get("episode_returns") or []
                spread = (f"{len(episodes)} episodes, {min(episodes):,.0f}–{max(episodes):,.0f}" if episodes
                          else "deterministic")
                seeds, final = "1 evaluation", f"{m['final_return_iqm']:,.0f} ({spread})"
            else:
                seeds, final = str(m["seeds"]), f"{m['final_return_iqm']:,.0f} [{ci[0]:,.0f}, {ci[1]:,.0f}]"
            rows.append([
                target, s, seeds, final,
                _fmt(m.get("jumpstart"), 0) if "jumpstart" in m else "—",
                _fmt(m.get("asymptotic_gain"), 0) if "asymptotic_gain" in m else "—",
                _fmt(m.get("area_ratio"), 2) if "area_ratio" in m else "—",
                _fmt(m.get("time_to_threshold"), 0) if "threshold" in m else "—",
                _fmt(m.get("speedup"), 2) if "threshold" in m else "—",
                f"{p:.2f} [{m['prob_improvement_ci95'][0]:.2f}, {m['prob_improvement_ci95'][1]:.2f}]" if p is not None else "—",
                _fmt(m.get("target_steps_used"), 0) if m.get("target_steps_used") is not None else "—",
            ])
    return rows


def write_tidy_curves(runs: dict, study_dir: Path) -> Path:
    """``curves.csv``: one row per evaluation (target, strategy, seed, step, return), for pandas / seaborn / R."""
    lines = ["target,strategy,seed,step,return"]
    for target, strategies in runs.items():
        for strategy, seeded in sorted(strategies.items(), key=lambda kv: _rank(kv[0])):
            for seed, curve in sorted(seeded, key=lambda sc: sc[0]):
                lines += [f"{target},{strategy},{seed},{step:.0f},{ret:.6g}" for step, ret in zip(curve.steps, curve.returns)]
    path = study_dir / "curves.csv"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# What a strategy's runs were trained with, beyond the spec: the transfer flags that change the learning.
_SETTINGS = ("algo", "lr_scale", "feature_layers", "freeze_layers", "reinit_head", "norm", "reset_exploration",
             "critic_warmup", "calibrate_episodes", "calibrate_sim_steps")


def runs_table(study_dir: Path) -> list[list[str]]:
    """Per target and strategy: finished and failed runs, wall-clock per run, and the resolved settings."""
    groups: dict[tuple[str, str], dict] = {}
    for run_dir in sorted(p for p in (study_dir / "runs").glob("*/*/s*") if p.is_dir()):
        g = groups.setdefault((run_dir.parent.parent.name, run_dir.parent.name),
                              {"finished": 0, "failed": 0, "wall": [], "settings": None})
        if (run_dir / "error.txt").exists():
            g["failed"] += 1
        if not (run_dir / "result.json").exists():
            continue
        g["finished"] += 1
        result = json.loads((run_dir / "result.json").read_text())
        if "wall_seconds" in result:
            g["wall"].append(result["wall_seconds"])
        if g["settings"] is None and (run_dir / "run.json").exists():
            config = json.loads((run_dir / "run.json").read_text())["config"]
            hyper = {**(config.get("spec", {}).get("transfer", {}).get("hyperparams") or {}), **(config.get("overrides") or {})}
            strategy = run_dir.parent.name
            keys = [k for k in _SETTINGS if not k.startswith("calibrate_") or strategy == "calibrate"]
            g["settings"] = "no training" if strategy == "zero-shot" else ", ".join(
                [f"{k} {config[k]}" for k in keys if config.get(k) not in (None, False, {}, 0)]
                + [f"{k} {v}" for k, v in hyper.items()])
    rows = [["target", "strategy", "finished", "failed", "wall-clock per run (median)", "settings"]]
    for (target, strategy), g in sorted(groups.items(), key=lambda kv: (kv[0][0], _rank(kv[0][1]))):
        wall = f"{float(np.median(g['wall'])) / 60:.1f} min" if g["wall"] else "not recorded"
        rows.append([target, strategy, str(g["finished"]), str(g["failed"]), wall, g["settings"] or "—"])
    return rows


def case_lines(metrics: dict) -> list[str]:
    lines = []
    for target, t in metrics["targets"].items():
        if "case" not in t:
            continue
        c, v = t["case"], t["verdict"]
        lines.append(f"**{target}** — case {c['case']} ({'large' if c['large_budget'] else 'small'} budget, "
                     f"{'similar' if c['similar'] else 'different'} task) → recommended **{c['recommended']}**. "
                     f"Why: {c['reason']}. {v['text']}" + (f" {v['finetune_text']}" if "finetune_text" in v else ""))
    return lines


def calibration_lines(study_dir: Path) -> list[str]:
    """A section linking each calibrate run's calibration report, with what it fitted."""
    found = sorted(study_dir.glob("runs/*/calibrate/*/calibration/calibration.json"))
    if not found:
        return []
    lines = ["## Calibrations (the calibrate strategy)", ""]
    for path in found:
        fit = json.loads(path.read_text())
        rel = path.parent.relative_to(study_dir)
        values = ", ".join(f"{k} {v:.3g}" + (f" (truth {fit['truth'][k]:.3g})" if k in fit.get("truth", {}) else "")
                           for k, v in fit["values"].items())
        truth = fit.get("truth", {}).get("delay")
        lines.append(f"- [{rel.parent.parent.parent.name} {rel.parent.name}]({rel.as_posix()}/report.html): delay "
                     f"{fit['delay']}" + ("" if truth is None else f" (truth {int(truth)})") + f"; {values}; "
                     f"{fit['steps']:,} steps, {fit['seconds']:.0f} s")
    return lines + [""]


def _shift_text(shift: dict) -> str:
    names = shift["names"] if isinstance(shift["names"], str) else ", ".join(shift["names"])
    how = f"x{shift['value']:g}" if shift["op"] == "scale" else f"{shift['op']} {shift['value']:g}"
    return f"{shift['field']} ({names}) {how}"


def _effects_text(effects: dict) -> list[str]:
    out = []
    if effects.get("action_delay"):
        out.append(f"{effects['action_delay']} step(s) of action latency")
    if effects.get("obs_delay"):
        out.append(f"observations {effects['obs_delay']} step(s) late")
    noise = effects.get("obs_noise") or {}
    if noise.get("std") or noise.get("bias_std"):
        out.append(f"sensor noise std {noise.get('std', 0):g} + per-episode bias std {noise.get('bias_std', 0):g}")
    if effects.get("action_noise_std"):
        out.append(f"action noise std {effects['action_noise_std']:g}")
    motor = effects.get("motor") or {}
    if motor.get("strength", 1.0) != 1.0:
        out.append(f"motor strength x{motor['strength']:g}")
    if motor.get("saturation", 1.0) != 1.0:
        out.append(f"motor saturation {motor['saturation']:g}")
    if motor.get("dead_zone"):
        out.append(f"dead zone {motor['dead_zone']:g}")
    sensors = effects.get("sensors") or {}
    if sensors.get("drop_prob") or sensors.get("stuck_prob"):
        out.append(f"sensor dropout {sensors.get('drop_prob', 0):g}, stuck {sensors.get('stuck_prob', 0):g}")
    return out


def protocol_lines(study_dir: Path, metrics: dict) -> list[str]:
    """What each target world is (from the spec the runs recorded) and how every run was evaluated."""
    lines = ["## Target worlds and evaluation", ""]
    recorded = None
    for target in metrics["targets"]:
        runs = sorted((study_dir / "runs" / target.replace("/", "__")).glob("*/s*/run.json"))
        if not runs:
            continue
        config = json.loads(runs[0].read_text())["config"]
        recorded = recorded or config
        world = (config.get("spec") or {}).get("targets", {}).get(target)
        if world is None:
            lines.append(f"- **{target}**: a plug-in env (the user's, not a simulated world), run as a robot")
            continue
        parts = [_shift_text(p) for p in world.get("physics", [])] + _effects_text(world.get("effects") or {})
        if world.get("task_variant"):
            parts.append(f"task variant: {world['task_variant']}")
        lines.append(f"- **{target}**: {world.get('description') or ''}" + (f" ({'; '.join(parts)})" if parts else ""))
    if recorded:
        budgets = (recorded.get("spec") or {}).get("budgets", {})
        every = recorded.get("eval_every") or budgets.get("eval_interval")
        episodes = recorded.get("eval_episodes") or budgets.get("eval_episodes")
        lines += ["", f"Every run is evaluated on its target at step 0 and every {every:,} target steps: {episodes} "
                  "episodes with deterministic actions, the same episodes (reset seeds 20,000 + i) for every "
                  f"strategy and seed. The final return is the mean of the last {FINAL_K} evaluations. Evaluation "
                  "steps are target steps too: not in the training budget, counted in the last column of the metrics."]
    return lines + [""]


def build_report(study_dir: str | Path, threshold_fraction: float | None = None) -> Path:
    """Compute metrics and write metrics.json, the plots, report.md and report.html.

    ``threshold_fraction`` defaults to the one the study recorded in study.json (a report rebuilt
    later must not silently measure with a different threshold).
    """
    study_dir = Path(study_dir)
    study = json.loads((study_dir / "study.json").read_text())
    if threshold_fraction is None:
        threshold_fraction = study["config"].get("threshold_fraction", THRESHOLD_FRACTION)
    runs = collect(study_dir)
    with bootstrap_cache(study_dir / "bootstrap_cache.json"):
        metrics = compute_metrics(study_dir, threshold_fraction, runs=runs)
        atomic_write_text(study_dir / "metrics.json", json.dumps(metrics, indent=2, default=str))
        images = plot_curves(runs, study_dir, metrics["budget_steps"])
        if metrics["targets"]:
            images.append(plot_intervals(metrics, study_dir))
            images += plot_rliable(metrics, study_dir)
    for name in ("robustness.png", "latency.png"):
        if (study_dir / name).exists():
            images.append(study_dir / name)
    write_tensorboard_layout(study_dir)

    rows = metrics_table(metrics)
    write_tidy_curves(runs, study_dir)
    run_rows = runs_table(study_dir)
    failed = sum(int(r[3]) for r in run_rows[1:])
    failed_note = ([f"> **{failed} run(s) failed** and are left out of every number below; each failed run's "
                    "folder has its `error.txt`.", ""] if failed else [])
    gaps = "\n".join(f"- {t}: zero-shot {_fmt(m['zero_shot_return'])}, sim-to-real gap {_fmt(m['sim_to_real_gap'])}"
                     for t, m in metrics["targets"].items())
    cfg = study["config"]
    repro = (f"- command: `{study['command']}`\n- commit: `{study['git_commit']}`\n- seeds: 0..{cfg['seeds'] - 1}\n"
             f"- versions: {', '.join(f'{k} {v}' for k, v in study['versions'].items())}\n"
             f"- pretrained policy: `{metrics['policy']}`")
    header = (f"Task **{metrics['task']}**, budget **{metrics['budget_steps']:,} target steps** per run, "
              f"pretrained policy's return in the nominal sim: **{_fmt(metrics['sim_return'])}**.")
    seeds_note = ([f"> **{cfg['seeds']} seeds per strategy**: the 95% intervals are wide and can miss; "
                   "rliable's authors advise at least 5 (Agarwal et al. 2021).", ""] if cfg["seeds"] < 5 else [])

    calibrations = calibration_lines(study_dir)

    def document(image) -> str:
        """The report as markdown; ``image`` renders a figure (a file link for .md, inline data for .html)."""
        return "\n".join([
            f"# Transfer report: {metrics['task']}", "", header, "", *seeds_note, *failed_note,
            "## Sim-to-real gap", gaps, "",
            "## Which case, and did the recommendation hold?", *[f"- {x}" for x in case_lines(metrics)], "",
            *calibrations,
            *protocol_lines(study_dir, metrics),
            "## Metrics", "", md_table(rows), "", *[image(p) + "\n" for p in images], "",
            "## Runs", "", md_table(run_rows), "",
            "Every evaluation of every run, one row each: `curves.csv` (target, strategy, seed, step, return).", "",
            "## Definitions", DEFINITIONS, "## Reproducibility", repro, ""])

    return write_report(study_dir, document, "sim2real report", atomic_write_text)


def write_tensorboard_layout(study_dir: Path) -> None:
    """A custom-scalars layout so `tensorboard --logdir STUDY` overlays the strategies per target."""
    layout_dir = study_dir / "tb_layout"
    if layout_dir.exists():
        return
    from torch.utils.tensorboard import SummaryWriter  # torch only when the layout is still to be written

    writer = SummaryWriter(str(layout_dir))
    writer.add_custom_scalars({
        "transfer": {
            "return on the target": ["Multiline", [r"eval/target/mean_return"]],
            "policy loss": ["Multiline", [r"train/policy_gradient_loss", r"train/actor_loss"]],
            "value loss": ["Multiline", [r"train/value_loss", r"train/critic_loss"]],
        }
    })
    writer.close()
