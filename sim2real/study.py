"""A study: the grid targets x strategies x seeds, run in parallel processes, resumable, then measured.

Layout of a study folder::

    study.json                     the study's config, command, versions, commit
    runs/<target>/<strategy>/s<seed>/   one transfer run each (result.json marks it finished); <strategy> may be a
                                   variant, finetune@lr_scale=0.3 (a strategy with its own transfer settings)
    _incomplete/                   runs that were killed mid-way, moved aside (never deleted)
    pretrained.json                the pretrained policy's return in the nominal sim (for the gap)
    metrics.json, report.md, report.html, *.png

Re-running the same command skips finished runs, resumes interrupted ones from their checkpoints and
redoes failed ones (set aside under ``_incomplete/``); a
run that raises is recorded as failed and does not stop the others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sim2real.executors import check_executor, make_executor
from sim2real.learning.artifacts import atomic_write_text, write_run_info
from sim2real.metrics import THRESHOLD_FRACTION
from sim2real.progress import fmt_duration, redraw
from sim2real.report import build_report
from sim2real.robustness import LATENCY, plot_robustness, robustness_sweep
from sim2real.spec import load_spec
from sim2real.transfer.cases import SIMILARITY_THRESHOLD
from sim2real.transfer.run import TransferConfig, TransferError, transfer
from sim2real.transfer.strategies import STRATEGIES
from sim2real.worlds.targets import resolve_target

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STRATEGIES = ["zero-shot", "freeze", "finetune", "scratch"]


@dataclass
class StudyConfig:
    task: str = "hopper"
    policy: str | None = None  # default: the zoo's DR policy for the task
    targets: list[str] = field(default_factory=lambda: ["real"])
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    seeds: int = 3
    budget: str | int = "small"
    workers: int = 0  # 0: one per core
    executor: str = "local"  # or "ray" (see sim2real.executors)
    ray_address: str | None = None  # with executor "ray": None starts a local Ray; "auto" joins a running cluster
    threshold_fraction: float = THRESHOLD_FRACTION
    similarity_threshold: float = SIMILARITY_THRESHOLD  # zero-shot / sim return below this: a different task
    eval_every: int | None = None
    eval_episodes: int | None = None
    robustness: bool = True  # sweep the spec's robustness parameter (and action latency) for the report
    # Further TransferConfig fields passed to every run unchanged (lr_scale, feature_layers, norm, overrides...).
    transfer_options: dict = field(default_factory=dict)

    def run_config(self, policy: str, run: RunSpec) -> TransferConfig:
        """The transfer config of one run of the grid: the study's settings, not the transfer defaults; a
        variant's own settings over the study's."""
        strategy, options = split_strategy(run.strategy)
        return TransferConfig(policy=policy, task=self.task, target=run.target, strategy=strategy, budget=self.budget,
                              seed=run.seed, eval_every=self.eval_every, eval_episodes=self.eval_episodes,
                              similarity_threshold=self.similarity_threshold, threads=1,
                              **{**self.transfer_options, **options})

    def resolved_policy(self) -> str:
        if self.policy:
            return self.policy
        zoo = ROOT / "policies" / f"{self.task}-dr"
        if not zoo.exists():
            raise TransferError(f"no pretrained policy given and {zoo} does not exist; pass --policy or run "
                                f"`python scripts/make_zoo.py {self.task}`")
        return os.path.relpath(zoo) if zoo.is_relative_to(Path.cwd()) else str(zoo)


@dataclass
class RunSpec:
    target: str
    strategy: str
    seed: int

    def dir(self, study_dir: Path) -> Path:
        return study_dir / "runs" / target_folder(self.target) / self.strategy / f"s{self.seed}"


def target_folder(target: str) -> str:
    """A target's folder name: a world's name, or a plug-in's id with '/' (a Gymnasium namespace) as '__'."""
    return target.replace("/", "__")


def split_strategy(label: str) -> tuple[str, dict]:
    """``finetune@lr_scale=0.3,feature_layers=2`` -> ``("finetune", {"lr_scale": 0.3, "feature_layers": 2})``:
    a variant runs its strategy with its own transfer settings, beside the plain one, in the same study."""
    import yaml

    name, _, settings = label.partition("@")
    options = {}
    for item in settings.split(",") if settings else []:
        key, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[a-z_]+", key.strip()) or not value.strip():
            raise TransferError(f"--strategies {label!r}: a variant is NAME@KEY=VALUE[,KEY=VALUE...], "
                                "e.g. finetune@lr_scale=0.3")
        options[key.strip()] = yaml.safe_load(value)
    return name, options


def _check_strategy(label: str) -> None:
    name, options = split_strategy(label)
    if name not in STRATEGIES:
        raise TransferError(f"--strategies: unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")
    _check_transfer_options(options)
    # A setting some strategy reads but this one ignores would make a variant identical to its strategy.
    read_by_some = {p for st in STRATEGIES.values() for p in st.params}
    ignored = sorted(k for k in options if k in read_by_some and k not in STRATEGIES[name].params)
    if ignored:
        raise TransferError(f"--strategies {label!r}: {name} does not read {', '.join(ignored)}; it reads "
                            f"{', '.join(STRATEGIES[name].params) or 'none of the strategy settings'}")


def grid(cfg: StudyConfig) -> list[RunSpec]:
    spec = load_spec(cfg.task)
    for t in cfg.targets:
        # A world of the task, or a plug-in env (Gymnasium id, module:Factory) that must import before any run.
        resolve_target(spec, t, cfg.transfer_options.get("import_module"), cfg.transfer_options.get("target_kwargs"))
    check_executor(cfg.executor, cfg.ray_address)
    for s in cfg.strategies:
        _check_strategy(s)
    # Zero-shot first (seconds each), then the training runs, longest-first is unknown so keep grid order.
    order = sorted(cfg.strategies, key=lambda s: s != "zero-shot")
    return [RunSpec(t, s, seed) for s in order for t in cfg.targets for seed in range(cfg.seeds)]


# What every run of a study shares: a re-run into the same folder must not change it, or the report
# would label old runs with new settings. (Targets, strategies and seeds may grow: they add runs.)
FIXED_BY_THE_FOLDER = ("task", "policy", "budget_steps", "eval_every", "eval_episodes", "similarity_threshold",
                       "transfer_options")


def _check_same_study(study_dir: Path, cfg: StudyConfig, policy: str, budget: int) -> None:
    recorded_path = study_dir / "study.json"
    if not recorded_path.exists():
        return
    recorded = json.loads(recorded_path.read_text())["config"]
    now = {**asdict(cfg), "policy": policy, "budget_steps": budget}
    changed = [f"{key}: recorded {recorded.get(key)!r}, now {now[key]!r}" for key in FIXED_BY_THE_FOLDER
               if key in recorded and recorded.get(key) != now[key]]
    if changed:
        raise ValueError(f"{study_dir} is a study with other settings ({'; '.join(changed)}); its runs would be "
                         "reported under the new ones. Use another --out, or the recorded settings")


def _check_transfer_options(options: dict) -> None:
    from dataclasses import fields

    set_by_study = {"policy", "target", "strategy", "budget", "seed", "eval_every", "eval_episodes",
                    "similarity_threshold", "threads"}
    allowed = sorted(f.name for f in fields(TransferConfig) if f.name not in set_by_study)
    for key in options:
        if key not in allowed:
            raise TransferError(f"transfer option {key!r}: not a transfer setting a study passes through; "
                                f"allowed: {', '.join(allowed)}")


def _run_one(policy: str, run_dir: str, cfg: TransferConfig) -> dict:
    """Worker: one transfer run. Returns a status dict; never raises (the study goes on)."""
    t0 = time.monotonic()
    try:
        # A run a kill interrupted continues from its checkpoint (resumable() decided it is one).
        transfer(cfg, out=run_dir, quiet=True, resume=(Path(run_dir) / "run.json").exists())
        return {"ok": True, "seconds": time.monotonic() - t0}
    except Exception:  # noqa: BLE001 - recorded in the run folder and reported
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "error.txt").write_text(traceback.format_exc())
        return {"ok": False, "seconds": time.monotonic() - t0, "error": traceback.format_exc().splitlines()[-1]}


def resumable(run_dir: Path) -> bool:
    """An unfinished run a kill interrupted (it continues where it was); a failed one is redone from scratch."""
    return (run_dir / "run.json").exists() and not (run_dir / "error.txt").exists()


def _set_aside(run_dir: Path, study_dir: Path) -> None:
    """Move an unfinished run out of the way (it is redone); nothing is deleted."""
    dest = study_dir / "_incomplete" / f"{run_dir.relative_to(study_dir / 'runs').as_posix().replace('/', '-')}-{int(time.time())}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), dest)


class StudyProgress:
    """Runs done / running / failed with an overall ETA."""

    def __init__(self, total: int, workers: int, skipped: int):
        self.total, self.workers, self.skipped = total, workers, skipped
        self.done = self.failed = self.running = 0
        self.durations: list[float] = []
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()

    def show(self, last: str = "") -> None:
        remaining = self.total - self.skipped - self.done - self.failed
        mean = sum(self.durations) / len(self.durations) if self.durations else None
        eta = fmt_duration(mean * remaining / max(self.workers, 1)) if mean else "?"
        line = (f"study: {self.done + self.skipped}/{self.total} done ({self.skipped} from before), "
                f"{self.running} running, {self.failed} failed, elapsed {fmt_duration(time.monotonic() - self.t0)}, "
                f"ETA {eta}  {last}")
        if self.tty:
            redraw(sys.stderr, line)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()


def run_study(cfg: StudyConfig, out: str | Path | None = None, quiet: bool = False) -> Path:
    """Run (or resume) a study and write its metrics and report; returns the study folder."""
    spec = load_spec(cfg.task)
    policy = cfg.resolved_policy()
    budget = spec.budget(cfg.budget)
    study_dir = Path(out) if out else Path("runs") / "study" / f"{cfg.task}-{cfg.budget}"
    if cfg.seeds < 1 or cfg.workers < 0:
        raise ValueError(f"--seeds {cfg.seeds} / --workers {cfg.workers}: need at least 1 seed and 0 (one per core) "
                         "or more workers")
    runs = grid(cfg)  # validates targets, strategies and the executor before anything is written
    _check_transfer_options(cfg.transfer_options)
    for strategy in cfg.strategies:  # each variant's own settings too
        try:
            cfg.run_config(policy, RunSpec(runs[0].target, strategy, 0)).validate()
        except ValueError as exc:
            raise TransferError(f"--strategies {strategy}: {exc}" if "@" in strategy else str(exc)) from None
    plugins = [t for t in cfg.targets if t not in spec.targets]
    if plugins and cfg.workers != 1:
        raise TransferError(f"--targets {' '.join(plugins)}: a plug-in env is treated as a robot, one run at a "
                            f"time; pass --workers 1 (now {cfg.workers or 'one per core'})")
    _check_same_study(study_dir, cfg, policy, budget)
    study_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(study_dir, {**asdict(cfg), "policy": policy, "budget_steps": budget})
    os.replace(study_dir / "run.json", study_dir / "study.json")

    todo = []
    for r in runs:
        d = r.dir(study_dir)
        if (d / "result.json").exists():
            continue
        if d.exists() and not resumable(d):
            _set_aside(d, study_dir)
        todo.append(r)
    workers = cfg.workers or os.cpu_count() or 1
    progress = StudyProgress(len(runs), min(workers, max(len(todo), 1)), len(runs) - len(todo))
    if not quiet:
        print(f"study {study_dir}: {len(runs)} runs ({len(todo)} to do) on {progress.workers} {cfg.executor} workers, "
              f"budget {budget:,} target steps, policy {policy}", file=sys.stderr)
    failures: list[str] = []
    if todo:
        executor = make_executor(cfg.executor, progress.workers, cfg.ray_address)
        progress.workers = min(executor.workers, len(todo))
        try:
            pending: dict[Future, RunSpec] = {}
            queue = list(todo)
            while queue or pending:
                while queue and len(pending) < progress.workers:
                    r = queue.pop(0)
                    fut = executor.submit(_run_one, policy, r.dir(study_dir), cfg.run_config(policy, r))
                    pending[fut] = r
                progress.running = len(pending)
                if not quiet:
                    progress.show()
                # Wake up now and then so the elapsed time and ETA keep moving on a terminal.
                finished, _ = wait(pending, timeout=5 if progress.tty else 60, return_when=FIRST_COMPLETED)
                for fut in finished:
                    r = pending.pop(fut)
                    try:
                        status = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a worker process (or node) died
                        status = {"ok": False, "seconds": 0.0, "error": f"worker died: {exc!r}"}
                    label = f"{r.target}/{r.strategy}/s{r.seed}"
                    if status["ok"]:
                        progress.done += 1
                        if r.strategy != "zero-shot":  # seconds, not minutes: it would skew the ETA
                            progress.durations.append(status["seconds"])
                    else:
                        progress.failed += 1
                        failures.append(f"{label}: {status['error']}")
                    progress.running = len(pending)
                    if not quiet:
                        progress.show(f"last: {label} {'ok' if status['ok'] else 'FAILED'} in {status['seconds']:.0f}s")
        finally:
            executor.shutdown()
        if not quiet and progress.tty:
            sys.stderr.write("\n")
    for f in failures:
        print(f"failed run: {f}", file=sys.stderr)

    if cfg.robustness and spec.robustness:
        _robustness(cfg, spec, policy, study_dir, quiet)

    build_report(study_dir, threshold_fraction=cfg.threshold_fraction)
    if failures:
        raise StudyRunsFailed(study_dir, failures, len(runs))
    return study_dir


class StudyRunsFailed(RuntimeError):
    """Some runs of a study failed; the report covers the others and each failed run has an error.txt."""

    def __init__(self, study_dir: Path, failures: list[str], total: int):
        self.study_dir, self.failures = study_dir, failures
        super().__init__(f"{len(failures)} of {total} runs failed (error.txt in each failed run's folder; "
                         f"re-running the command redoes them); the report covers the rest: {study_dir / 'report.html'}")


def _robustness(cfg: StudyConfig, spec, policy: str, study_dir: Path, quiet: bool) -> None:
    """The EPOpt-style plot (zero-shot return across the spec's parameter sweep) and one across 0-3 steps of
    action latency, DR against nominal pretraining."""
    policies = [policy]
    nominal = ROOT / "policies" / f"{cfg.task}-nominal"
    if nominal.exists() and str(nominal) != policy:
        policies.append(str(nominal))
    r = spec.robustness
    episodes = cfg.eval_episodes or spec.budgets.eval_episodes
    for name, (param, low, high) in {"robustness": (r.param, *r.range), "latency": (LATENCY, 0, 3)}.items():
        if (study_dir / f"{name}.json").exists():
            continue
        if not quiet:
            print(f"robustness sweep: {param} {low}..{high} for {len(policies)} policies", file=sys.stderr)
        sweep = robustness_sweep(policies, param, low, high, r.points, episodes=episodes)
        atomic_write_text(study_dir / f"{name}.json", json.dumps(sweep, indent=2))
        plot_robustness(sweep, study_dir / f"{name}.png")
