"""The ``sim2real`` command: envs, pretrain, select, failures, transfer, study, report, robustness, evaluate, export, robot-server, record, log, calibrate, bench."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import sim2real
from sim2real.progress import console
from sim2real.spec import SpecError


class UserError(Exception):
    """A mistake in what the user asked for: printed without a traceback, exit status 2."""


def parse_overrides(items: list[str] | None, flag: str = "--set") -> dict:
    """``["batch_size=64", "policy_kwargs={net_arch: [16]}"]`` -> a dict (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} batch_size=64")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _cmd_envs(args: argparse.Namespace) -> None:
    from sim2real.describe import describe_task, list_tasks

    if args.task:
        describe_task(args.task)
    else:
        list_tasks()


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from sim2real.learning.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(**config_values(args, PretrainConfig), overrides=parse_overrides(args.set),
                         inputs=parse_overrides(args.inputs, flag="--inputs"))
    run_dir = pretrain(cfg, out=args.out, resume=args.resume)
    print(f"pretrained policy: {run_dir}/model.zip  (TensorBoard: tensorboard --logdir {run_dir})")


def _cmd_select(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np
    from rich.table import Table

    from sim2real.learning.selection import Rule, pick, read_episode_log

    rule = Rule(world=args.world, stat=args.stat, floor_world=args.floor_world, floor=args.floor)
    log = read_episode_log(args.run)
    chosen = pick(log, rule)
    worlds = list(log[0]["returns"]) if log else []
    floor = "" if rule.floor is None else f", among evaluations with {rule.floor_world} mean >= {rule.floor:,.0f}"
    table = Table(title=f"{args.run}: best {rule.stat} return on {rule.world}{floor}")
    table.add_column("step", justify="right")
    table.add_column(f"{rule.world} {rule.stat}", justify="right")
    for world in worlds:
        table.add_column(f"{world} mean", justify="right")
    table.add_column("")
    for e in log:
        means = [f"{np.mean(e['returns'][w]):,.0f}" for w in worlds]
        mark = "◀ pick" if e is chosen else ("" if rule.admits(e) else "below floor" if e["step"] > 0 else "start")
        table.add_row(f"{e['step']:,}", f"{rule.value(e):,.0f}", *means, mark)
    console().print(table)
    if chosen is None:
        if rule.floor is None:
            raise UserError(f"{args.run}: no trained evaluation logged yet (step 0 is the starting point)")
        raise UserError(f"no evaluation of {args.run} clears {rule.floor_world} >= {rule.floor:g}")
    kept = Path(args.run) / "evaluated" / f"step_{chosen['step']:09d}.zip"
    print(f"pick: step {chosen['step']:,} ({rule.stat} {rule.value(chosen):,.1f}); policy: "
          + (str(kept) if kept.exists() else "not kept (pretrain --keep-evaluated keeps every evaluated policy)"))


def _cmd_failures(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rich.table import Table

    from sim2real.learning.failures import episodes_with_draws, noise_level, sensitivities
    from sim2real.learning.selection import read_episode_log

    if args.last < 1:
        raise UserError(f"--last {args.last}: must be at least 1")
    if args.run.endswith(".json"):  # sim2real evaluate --targets sim --json FILE: one evaluation
        if not Path(args.run).exists():
            raise UserError(f"{args.run}: missing (write it with sim2real evaluate POLICY --targets sim --json FILE)")
        worlds = json.loads(Path(args.run).read_text())["worlds"]
        log = [{"step": 0, "returns": {w: r["returns"] for w, r in worlds.items()},
                "draws": {w: r["draws"] for w, r in worlds.items() if r.get("draws")}}]
    else:
        log = read_episode_log(args.run)
    if not log:
        raise UserError(f"{args.run}: no evaluation logged yet")
    steps = [e["step"] for e in log]
    end = steps[-1] if args.step is None else args.step
    if end not in steps:
        raise UserError(f"--step {end}: not an evaluated step of {args.run}; evaluated: {', '.join(map(str, steps))}")
    chosen = [e for e in log if e["step"] <= end][-args.last:]
    rows = sensitivities(chosen, args.world)
    n, distinct = episodes_with_draws(chosen, args.world)
    span = ("" if args.run.endswith(".json") else f", step {end:,}" if len(chosen) == 1
            else f", steps {chosen[0]['step']:,}-{end:,}")
    table = Table(title=f"{args.run}{span}: return against each draw, {n} episodes in {args.world!r}")
    for col in ("parameter", "drawn", "rank corr.", "low third", "middle", "high third"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    for r in rows[: args.top]:
        table.add_row(r.param, f"{r.low:.3g}-{r.high:.3g}", f"{r.rho:+.2f}", *(f"{t:,.0f}" for t in r.thirds))
    console().print(table)
    print(f"rank corr.: Spearman's, of the draw with the episode return, over {distinct} distinct worlds (a run "
          f"seeds its evaluations alike: pooled ones repeat worlds); below ±{noise_level(distinct):.2f} it is within "
          "noise. The thirds: mean return of the episodes with the lowest, middle and highest draws")


def _cmd_transfer(args: argparse.Namespace) -> None:
    from sim2real.transfer.run import TransferConfig, transfer

    values = config_values(args, TransferConfig)
    if args.steps is not None:
        values["budget"] = args.steps
    elif str(values["budget"]).isdigit():
        values["budget"] = int(values["budget"])
    cfg = TransferConfig(**values, overrides=parse_overrides(args.set),
                         target_kwargs=parse_overrides(args.target_kwargs, flag="--target-kwargs"))
    run_dir = transfer(cfg, out=args.out, resume=args.resume)
    import json

    result = json.loads((run_dir / "result.json").read_text())
    print(f"{result['ran_strategy']} on {cfg.target}: mean return {result['final_mean']:.1f} "
          f"over {len(result['final_returns'])} episodes after {result['target_steps']['training']:,} training steps "
          f"({result['target_steps']['total']:,} target steps with evaluation)")
    print(f"run folder: {run_dir}  (model.zip is an ordinary SB3 model)")


def _cmd_study(args: argparse.Namespace) -> None:
    from sim2real.study import StudyConfig, StudyRunsFailed, run_study

    cfg = StudyConfig(
        task=args.task,
        policy=args.policy,
        targets=args.targets,
        strategies=args.strategies,
        seeds=args.seeds,
        budget=int(args.budget) if str(args.budget).isdigit() else args.budget,
        workers=args.workers,
        executor=args.executor,
        ray_address=args.ray_address,
        threshold_fraction=args.threshold,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        robustness=not args.no_robustness,
        similarity_threshold=args.similarity,
        transfer_options={**parse_overrides(args.option, flag="--option"),
                          **({"import_module": args.import_module} if args.import_module else {})},
    )
    try:
        study_dir = run_study(cfg, out=args.out)
    except StudyRunsFailed as exc:
        print(f"sim2real study: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"report: {study_dir / 'report.html'}  (and report.md, metrics.json; "
          f"curves: tensorboard --logdir {study_dir})")


def _cmd_report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from sim2real.report import build_report

    if not (Path(args.dir) / "study.json").exists():
        raise UserError(f"{args.dir}: not a study folder (no study.json)")
    path = build_report(args.dir, threshold_fraction=args.threshold)
    print(f"report: {path.with_suffix('.html')}  (and {path.name}, metrics.json)")


def _cmd_robustness(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from sim2real.learning.artifacts import atomic_write_text
    from sim2real.robustness import plot_robustness, robustness_sweep

    if args.param == "action_delay":
        if not 0 <= args.range[0] <= args.range[1]:
            raise UserError(f"--range {args.range[0]} {args.range[1]}: need 0 <= LO <= HI (steps of latency)")
    elif args.range[0] > args.range[1] or args.range[0] <= 0:
        raise UserError(f"--range {args.range[0]} {args.range[1]}: need 0 < LO <= HI (scales of the nominal value)")
    sweep = robustness_sweep(args.policies, args.param, args.range[0], args.range[1], args.points, args.episodes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "robustness.json", json.dumps(sweep, indent=2))
    plot = plot_robustness(sweep, out / "robustness.png")
    from rich.table import Table

    table = Table(title=f"zero-shot return vs {args.param}")
    table.add_column("latency (steps)" if args.param == "action_delay" else "scale")
    for label in sweep["policies"]:
        table.add_column(label, overflow="fold")
    for i, s in enumerate(sweep["scales"]):
        table.add_row(f"{s:.2f}", *[f"{r['mean'][i]:.0f}" for r in sweep["policies"].values()])
    console().print(table)
    print(f"plot: {plot}  data: {out / 'robustness.json'}")


def _cmd_robot_server(args: argparse.Namespace) -> None:
    import secrets

    from sim2real.robot.remote import RobotServer
    from sim2real.worlds.make import make_target_env

    token = args.token or os.environ.get("SIM2REAL_ROBOT_TOKEN") or secrets.token_hex(16)
    server = RobotServer(make_target_env(args.task, args.world), args.port, token, host=args.host)
    print(f"serving {args.task} '{args.world}' on {server.address} (Ctrl-C stops)\n"
          f"  --target sim2real.robot.remote:RemoteRobotEnv --target-kwargs address={server.address} token={token}",
          flush=True)
    try:
        server.serve()
    finally:
        server.close()


def _cmd_record(args: argparse.Namespace) -> None:
    from sim2real.robot.record import RecordConfig, record

    cfg = RecordConfig(**config_values(args, RecordConfig))
    out = record(cfg, args.out, args.import_module, parse_overrides(args.target_kwargs, flag="--target-kwargs"))
    summary = json.loads((out / "record.json").read_text())
    print(f"recorded {summary['episodes']} episodes, {summary['robot_steps']['total']:,} steps on {cfg.target}: "
          f"mean return {sum(summary['returns']) / len(summary['returns']):.1f}; {out / 'transitions.jsonl'} "
          f"(sim2real log {out})")


def _cmd_calibrate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rich.table import Table

    from sim2real.calibration.run import calibrate
    from sim2real.spec import load_spec

    spec = load_spec(args.task)
    out = Path(args.out) if args.out else Path(args.data) / "calibration"
    result = calibrate(spec, args.data, out, params=args.params, window=args.window, max_delay=args.max_delay,
                       delay=args.delay, obs_bias=args.obs_bias, phase=args.phase, offsets=args.episode_offsets,
                       log=None if args.quiet else lambda line: print(line, flush=True))
    table = Table(title=f"calibration of {spec.name} from {result.steps:,} steps ({result.seconds:.0f} s)")
    for col in ("parameter", "fitted", "95% interval", "truth"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    for lab in result.labels:
        truth = result.truth.get(lab)
        table.add_row(lab, f"{result.values[lab]:.4g}", f"±{result.intervals[lab]:.3g}",
                      "-" if truth is None else f"{truth:.4g}")
    truth_delay = result.truth.get("delay")
    table.add_row("action delay (steps)", str(result.delay), "-", "-" if truth_delay is None else str(int(truth_delay)))
    console().print(table)
    print(f"residual RMS {result.rms_before:.4g} (nominal sim) -> {result.rms_after:.4g} (calibrated); "
          f"{out / 'calibrated.yaml'}, report {out / 'report.html'}")


def _cmd_log(args: argparse.Namespace) -> None:
    from collections import Counter

    from rich.table import Table

    from sim2real.robot.log import read_log, to_minari

    episodes = [e for e in read_log(args.run) if args.phase is None or e.phase == args.phase]
    table = Table(title=f"{args.run}: transition log")
    for col in ("phase", "episodes", "steps", "mean return", "killed mid-episode", "ended by"):
        table.add_column(col, justify="left" if col in ("phase", "ended by") else "right")
    for phase in dict.fromkeys(e.phase for e in episodes):  # train, eval, record: in the order they appear
        mine = [e for e in episodes if e.phase == phase]
        reasons = Counter(e.reason or "killed (no end record)" for e in mine)
        table.add_row(phase, f"{len(mine):,}", f"{sum(e.steps for e in mine):,}",
                      f"{sum(float(e.rewards.sum()) for e in mine) / len(mine):,.1f}",
                      f"{sum(not e.complete for e in mine):,}", ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    console().print(table)
    if args.minari:
        ds = to_minari(episodes, args.minari, args.minari_dir)
        print(f"Minari dataset {args.minari}: {ds.total_episodes} episodes, {ds.total_steps:,} steps")


def _cmd_export(args: argparse.Namespace) -> None:
    from sim2real.robot.export import export_policy

    path = export_policy(args.policy, args.format, args.out, samples=args.samples)
    card = json.loads(path.with_suffix(".json").read_text())
    print(f"{path}: {card['format']}, actions within {card['parity_max_abs_diff']:.1e} of SB3's predict on "
          f"{card['parity_samples']} observations, {card['latency_ms_per_call']:.3f} ms per call "
          f"({card['latency_measured_with']}); spaces and control rate in {path.with_suffix('.json')}")


def _cmd_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from sim2real import bench

    for flag in ("n", "repeats", "steps", "eval_every", "eval_episodes"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} {value}: must be at least 1")
    if args.kind == "steps":
        result = bench.bench_steps(args.tasks or ["hopper", "walker2d", "half_cheetah", "inverted_pendulum"],
                                   n=args.n or 16, repeats=args.repeats, steps=args.steps or 4000)
    else:
        if args.tasks and len(args.tasks) > 1:
            raise UserError("bench learn: one task at a time (--tasks hopper)")
        task = (args.tasks or ["hopper"])[0]
        common = dict(steps=args.steps or 1_000_000, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                      n=args.n, contenders=tuple(args.contenders), race=not args.summarise)
        if len(args.seeds) == 1:
            result = bench.bench_learn(task, args.algo, seed=args.seeds[0], out=Path(args.out), **common)
        else:
            try:
                result = bench.bench_learn_seeds(task, args.seeds, Path(args.out), algo=args.algo, **common)
            except ValueError as exc:
                raise UserError(str(exc)) from None
    path = bench.write(result, Path(args.out))
    print(path.read_text())
    print(f"written: {path} and {path.with_suffix('.json')}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    import json
    from dataclasses import asdict
    from pathlib import Path

    import numpy as np
    from rich.table import Table

    from sim2real.learning.artifacts import atomic_write_text
    from sim2real.learning.evaluation import evaluate
    from sim2real.learning.loading import load_for_evaluation
    from sim2real.transfer.run import resolve_target
    from sim2real.worlds.inputs import WithInputs

    if args.episodes < 1:
        raise UserError(f"--episodes {args.episodes}: must be at least 1")
    pre, spec, model = load_for_evaluation(args.policy, args.task)
    from sim2real.worlds.make import EnvFactory, make_sim_env

    def world_env(world: str):
        if world == "sim" and "sim" not in spec.targets:  # the randomised training world: its draws are kept
            return EnvFactory(make_sim_env, spec, True)
        return resolve_target(spec, world, args.import_module)

    results = {
        world: evaluate(model, WithInputs(world_env(world), pre.inputs), args.episodes,
                        obs_rms=pre.obs_rms, seed=args.seed, deterministic=not args.stochastic)
        for world in args.targets or list(spec.targets)
    }
    table = Table(title=f"{args.policy}: {args.episodes} episodes per world, seed {args.seed}, "
                        f"{'stochastic' if args.stochastic else 'deterministic'} actions")
    for col in ("world", "return (mean ± std)", "episode length", "distance forward (m)"):
        table.add_column(col, justify="left" if col == "world" else "right", overflow="fold")
    for world, res in results.items():
        dist = "—" if res.distances is None else f"{np.mean(res.distances):+.2f}"
        table.add_row(world, f"{res.mean:,.1f} ± {res.std:,.1f}", f"{np.mean(res.lengths):,.0f}", dist)
    console().print(table)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        worlds = {world: asdict(res) for world, res in results.items()}
        atomic_write_text(out, json.dumps({"policy": args.policy, "episodes": args.episodes, "seed": args.seed,
                                           "deterministic": not args.stochastic, "worlds": worlds}, indent=2))
        print(f"per-episode results: {out}")


class DefaultsFormatter(argparse.HelpFormatter):
    """Shows a flag's default where it says something: not for unset options or when the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if "default" in text or unset or not action.option_strings:
            return text
        if isinstance(action, argparse._StoreFalseAction):
            return text
        default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {default})"


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per documented field of a config dataclass: its default, type and help come from the field.

    The dataclass is the one source of defaults; the CLI cannot drift from it.
    """
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta or meta.get("cli") is False:
            continue
        if meta.get("positional"):
            parser.add_argument(f.name, help=meta["help"])
            continue
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not dataclasses.MISSING else None
        kwargs = {"dest": f.name, "default": default, "help": meta["help"]}
        if meta.get("negate"):
            kwargs["action"] = "store_false"
        elif f.default is False:
            kwargs["action"] = "store_true"
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type))
            if kind is not None:
                kwargs["type"] = kind
            for key in ("choices", "metavar"):
                if key in meta:
                    kwargs[key] = meta[key]
        parser.add_argument(flag, **kwargs)


def config_values(args: argparse.Namespace, cls) -> dict:
    """The parsed values of the flags :func:`add_config_args` made for ``cls``."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if "help" in f.metadata and f.metadata.get("cli") is not False}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``command``, only that subcommand's flags are built (a fast `sim2real envs`)."""
    p = argparse.ArgumentParser(prog="sim2real", description="Pretrain in randomised MuJoCo, transfer to a shifted "
                                "target world, and measure what transfer bought.")
    p.add_argument("--version", action="version", version=f"sim2real {sim2real.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("envs", help="list tasks, or show one task's randomisation and target worlds", formatter_class=DefaultsFormatter)
    e.add_argument("task", nargs="?", help="a task name or spec file (default: list every task)")
    e.set_defaults(func=_cmd_envs)

    t = sub.add_parser("pretrain", help="pretrain a policy in the randomised sim world",
                       formatter_class=DefaultsFormatter)
    if command in (None, "pretrain"):
        from sim2real.learning.pretrain import PretrainConfig

        add_config_args(t, PretrainConfig)
        t.add_argument("--out", default=None, help="run folder (default runs/pretrain/<task>-<dr|nominal>-<algo>-s<seed>)")
        t.add_argument("--resume", action="store_true", help="continue a killed run from its latest checkpoint")
        t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a hyperparameter (YAML value)")
        t.add_argument("--inputs", action="append", metavar="KEY=VALUE",
                       help="override the spec's policy inputs: last_action=true, history=K")
    t.set_defaults(func=_cmd_pretrain)

    x = sub.add_parser("transfer", help="carry a pretrained policy to a target world with a strategy",
                       formatter_class=DefaultsFormatter)
    if command in (None, "transfer"):
        from sim2real.transfer.run import TransferConfig

        add_config_args(x, TransferConfig)
        x.add_argument("--steps", type=int, default=None, help="target training steps (overrides --budget)")
        x.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a hyperparameter (YAML value)")
        x.add_argument("--target-kwargs", action="extend", nargs="+", metavar="KEY=VALUE",
                       help="keyword arguments for the target's env factory or gym.make (YAML values)")
        x.add_argument("--out", default=None, help="run folder (default runs/transfer/<task>/<target>/<strategy>/s<seed>)")
        x.add_argument("--resume", action="store_true",
                       help="continue a killed or stopped run (same settings) from its newest complete checkpoint")
    x.set_defaults(func=_cmd_transfer)

    st = sub.add_parser("study", help="run the grid targets x strategies x seeds and write the transfer report", formatter_class=DefaultsFormatter)
    if command in (None, "study"):
        from sim2real.metrics import THRESHOLD_FRACTION
        from sim2real.study import DEFAULT_STRATEGIES
        from sim2real.transfer.cases import SIMILARITY_THRESHOLD

        st.add_argument("task", nargs="?", default="hopper", help="a task name or spec file (default: hopper)")
        st.add_argument("--policy", default=None, help="pretrained policy (default: policies/<task>-dr)")
        st.add_argument("--targets", nargs="+", default=["real"],
                        help="target worlds of the task, or plug-in envs (a Gymnasium id, module:Factory; a robot: "
                             "one run at a time, --workers 1)")
        st.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES,
                        help="strategies to compare (sim2real transfer --help lists them); a variant with its own "
                             "settings runs beside them: finetune@lr_scale=0.3 or freeze@feature_layers=2,norm=adapt")
        st.add_argument("--seeds", type=int, default=3, help="seeds per target and strategy (rliable advises >= 5)")
        st.add_argument("--budget", default="small", help="small, large (from the spec) or a number of steps")
        st.add_argument("--workers", type=int, default=0, help="parallel runs (default: one per core)")
        st.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local worker processes, or Ray tasks (a local Ray, or a cluster with --ray-address)")
        st.add_argument("--ray-address", default=None,
                        help="with --executor ray: 'auto' joins the cluster this machine belongs to, or ray://HOST:10001")
        st.add_argument("--threshold", type=float, default=THRESHOLD_FRACTION, help="time-to-threshold as a fraction of scratch's final")
        st.add_argument("--eval-every", type=int, default=None, help="target steps between evaluations (default: the spec's)")
        st.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default: the spec's)")
        st.add_argument("--similarity", type=float, default=SIMILARITY_THRESHOLD,
                        help="case classification: zero-shot/sim return below this counts as a different task")
        st.add_argument("--no-robustness", action="store_true", help="skip the robustness sweep in the report")
        st.add_argument("--out", default=None, help="study folder (default runs/study/<task>-<budget>)")
        st.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="a transfer setting for every run (lr_scale, feature_layers, norm, ...)")
        st.add_argument("--import", dest="import_module", default=None, metavar="MODULE",
                        help="module to import first in every run (registers a plug-in target's env)")
    st.set_defaults(func=_cmd_study)

    r = sub.add_parser("report", help="rebuild a study's report from its run folders", formatter_class=DefaultsFormatter)
    r.add_argument("dir", help="a study folder (with study.json and runs/)")
    r.add_argument("--threshold", type=float, default=None,
                   help="time-to-threshold fraction (default: the one the study recorded)")
    r.set_defaults(func=_cmd_report)

    rb = sub.add_parser("robustness", help="zero-shot return across a sweep of one physical parameter", formatter_class=DefaultsFormatter)
    rb.add_argument("policies", nargs="+", help="pretrained policies to compare (e.g. policies/hopper-dr policies/hopper-nominal)")
    rb.add_argument("--param", required=True, help="FIELD/NAME, e.g. body_mass/torso, geom_friction/floor, actuator_gear; or action_delay (steps)")
    rb.add_argument("--range", nargs=2, type=float, required=True, metavar=("LO", "HI"), help="scales of the nominal value")
    rb.add_argument("--points", type=int, default=7, help="values in the sweep")
    rb.add_argument("--episodes", type=int, default=5, help="episodes per value and policy")
    rb.add_argument("--out", default="runs/robustness", help="folder for robustness.json/png (a study folder adds it to the report)")
    rb.set_defaults(func=_cmd_robustness)

    se = sub.add_parser("select", help="apply a selection rule to a pretraining run's evaluations (which checkpoint is the policy)",
                        formatter_class=DefaultsFormatter)
    se.add_argument("run", help="a pretrain run folder (with evaluations_episodes.jsonl)")
    # pretrain's spellings work too (--select-on, --select-stat, --select-floor): a rule copies over unchanged.
    se.add_argument("--world", "--select-on", dest="world", default="sim",
                    help="the world whose episode returns rank the evaluations")
    se.add_argument("--stat", "--select-stat", dest="stat", default="mean", choices=("mean", "median"),
                    help="statistic of those returns")
    se.add_argument("--floor", "--select-floor", dest="floor", type=float, default=None, metavar="RETURN",
                    help="only evaluations whose --floor-world mean return is at least this")
    se.add_argument("--floor-world", default="nominal", help="the world --floor applies to")
    se.set_defaults(func=_cmd_select)

    fa = sub.add_parser("failures", help="where in the randomisation ranges a run's policy loses its return",
                        formatter_class=DefaultsFormatter)
    fa.add_argument("run", help="a pretrain run folder (with evaluations_episodes.jsonl), or the --json of "
                                "sim2real evaluate POLICY --targets sim")
    fa.add_argument("--step", type=int, default=None, help="the evaluation to look at (default: the last)")
    fa.add_argument("--last", type=int, default=1, help="pool this many evaluations up to --step (the same worlds "
                                                        "under successive policies: steadier, not more worlds)")
    fa.add_argument("--world", default="sim", help="the randomised world whose episodes logged their draws")
    fa.add_argument("--top", type=int, default=12, help="rows shown, strongest correlation first")
    fa.set_defaults(func=_cmd_failures)

    ev = sub.add_parser("evaluate", help="a policy's return, episode length and distance on target worlds", formatter_class=DefaultsFormatter)
    ev.add_argument("policy", help="a pretrain or transfer run folder, its model .zip, or a policies/ zoo entry")
    ev.add_argument("--targets", nargs="+", default=None,
                    help="target worlds, sim (the task's randomised sim world: each episode's draws go to --json, "
                         "for sim2real failures), Gymnasium ids (with --import) or module:Factory (default: every "
                         "world of the task)")
    ev.add_argument("--task", default=None,
                    help="the task of a plain SB3 model .zip or RL Zoo run folder (a sim2real policy knows its own)")
    ev.add_argument("--episodes", type=int, default=10, help="episodes per world")
    ev.add_argument("--seed", type=int, default=0, help="episode i runs on an env seeded SEED + i")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic mean")
    ev.add_argument("--import", dest="import_module", default=None, help="module that registers your env")
    ev.add_argument("--json", default=None, help="also write the per-episode results here")
    ev.set_defaults(func=_cmd_evaluate)

    rs = sub.add_parser("robot-server", help="serve a target world over the network, as a stand-in robot", formatter_class=DefaultsFormatter)
    rs.add_argument("task", help="a task name or spec file")
    rs.add_argument("--world", default="real", help="the target world to serve (default: real)")
    rs.add_argument("--port", type=int, default=5555, help="TCP port to listen on")
    rs.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    rs.add_argument("--token", default=None,
                    help="shared secret (default: $SIM2REAL_ROBOT_TOKEN, else a new one is printed)")
    rs.set_defaults(func=_cmd_robot_server)

    rc = sub.add_parser("record", help="record episodes on a target (a policy, or a scripted excitation) into a transition log",
                        formatter_class=DefaultsFormatter)
    if command in (None, "record"):
        from sim2real.robot.record import RecordConfig

        add_config_args(rc, RecordConfig)
        rc.add_argument("--out", required=True, help="folder for transitions.jsonl, record.json and run.json")
        rc.add_argument("--import", dest="import_module", default=None, help="module that registers your env")
        rc.add_argument("--target-kwargs", action="extend", nargs="+", metavar="KEY=VALUE",
                        help="keyword arguments for the target's env factory or gym.make (YAML values)")
    rc.set_defaults(func=_cmd_record)

    cb = sub.add_parser("calibrate", help="fit the simulator to a recorded transition log (mujoco.sysid)",
                        formatter_class=DefaultsFormatter)
    cb.add_argument("task", help="the task the data come from (a name or spec file)")
    cb.add_argument("data", help="a recording (sim2real record) or robot run folder, or its transitions.jsonl")
    cb.add_argument("--params", nargs="+", default=None, metavar="FIELD/NAME",
                    help="scales to fit, e.g. body_mass/torso actuator_gear/all motor/saturation "
                         "(default: the spec's calibration.params)")
    cb.add_argument("--window", type=int, default=None,
                    help="control steps per shooting window (default: the spec's calibration.window)")
    cb.add_argument("--max-delay", type=int, default=3, help="largest action delay tried (steps)")
    cb.add_argument("--delay", type=int, default=None, help="a known action delay (default: fitted)")
    cb.add_argument("--obs-bias", action="store_true", help="also fit a constant bias per observation entry")
    cb.add_argument("--episode-offsets", action=argparse.BooleanOptionalAction, default=None,
                    help="also fit each episode's offset of the position sensors, remove it, fit again "
                         "(default: the spec's calibration.episode_offsets)")
    cb.add_argument("--phase", choices=("train", "eval", "record"), default=None,
                    help="only this phase's episodes of the log")
    cb.add_argument("--out", default=None, help="output folder (default: DATA/calibration)")
    cb.add_argument("--quiet", action="store_true", help="no per-delay progress lines")
    cb.set_defaults(func=_cmd_calibrate)

    lg = sub.add_parser("log", help="summarise a run's transition log (a robot run), or export it to Minari", formatter_class=DefaultsFormatter)
    lg.add_argument("run", help="a transfer run folder with transitions.jsonl")
    lg.add_argument("--minari", default=None, metavar="DATASET_ID", help="also write it as a Minari dataset")
    lg.add_argument("--minari-dir", default=None, help="where Minari stores it (default: Minari's, ~/.minari)")
    lg.add_argument("--phase", choices=("train", "eval", "record"), default=None, help="only this phase's episodes")
    lg.set_defaults(func=_cmd_log)

    ex = sub.add_parser("export", help="write a policy as one ONNX or TorchScript file for the robot's computer", formatter_class=DefaultsFormatter)
    ex.add_argument("policy", help="a pretrain or transfer run folder, its model .zip, or a policies/ zoo entry")
    ex.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="file format")
    ex.add_argument("--out", default=None, help="file to write (default: policy.onnx / policy.pt beside the model)")
    ex.add_argument("--samples", type=int, default=1000, help="random observations for the parity check")
    ex.set_defaults(func=_cmd_export)

    bn = sub.add_parser("bench", help="speed side by side: env steps/s, or wall-clock time to a return threshold",
                        formatter_class=DefaultsFormatter)
    bn.add_argument("kind", choices=("steps", "learn"), help="steps: env steps/s; learn: time to the return threshold")
    bn.add_argument("--tasks", nargs="+", default=None, help="tasks (steps: default all four; learn: one, default hopper)")
    bn.add_argument("--n", type=int, default=None,
                    help="envs per vectorised contender (the batched world's simulations); steps: 16, learn: the "
                         "spec's pretrain.n_envs (--summarise: the number the logs recorded, where they did)")
    bn.add_argument("--repeats", type=int, default=3, help="steps: interleaved repeats per contender")
    bn.add_argument("--steps", type=int, default=None, help="steps: env steps per measurement (default 4000); "
                                                            "learn: training steps (default 1,000,000)")
    bn.add_argument("--algo", choices=("ppo", "sac"), default="ppo", help="learn: the algorithm")
    bn.add_argument("--contenders", nargs="+", choices=("sim2real", "sb3", "zoo"), default=["sim2real", "sb3", "zoo"],
                    help="learn: who races")
    bn.add_argument("--eval-every", type=int, default=20_000, help="learn: steps between evaluations")
    bn.add_argument("--eval-episodes", type=int, default=5, help="learn: deterministic episodes per evaluation")
    bn.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0],
                    help="learn: the seed every contender uses; several: one race per seed (in --out/seed_K), "
                         "summarised together")
    bn.add_argument("--out", default="runs/bench", help="folder for the JSON, the markdown table and the logs")
    bn.add_argument("--summarise", action="store_true",
                    help="learn: run nothing; summarise the contenders' logs already in --out (a race stopped early; "
                         "with --seeds, in --out/seed_K)")
    bn.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `python -m` puts the current directory on sys.path, the console script does not: a user's
    # `--target mymodule:MyRobot` or `--import mymodule` must work either way.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        args.func(args)
    except (SpecError, UserError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"sim2real {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; finished checkpoints are kept (rerun with --resume)", file=sys.stderr)
        return 130
    except (RuntimeError, ConnectionError) as exc:
        # Only a robot run raises these: imported here so that other commands do not pay for them.
        from sim2real.robot.remote import RobotLinkError
        from sim2real.robot.safety import EmergencyStop

        if not isinstance(exc, (EmergencyStop, RobotLinkError)):
            raise
        print(f"sim2real {args.command}: stopped: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
