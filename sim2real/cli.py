"""The ``sim2real`` command: envs, pretrain, transfer, study, report, robustness."""

from __future__ import annotations

import argparse
import sys

from sim2real.spec import SpecError


class UserError(Exception):
    """A mistake in what the user asked for: printed without a traceback, exit status 2."""


def _cmd_envs(args: argparse.Namespace) -> None:
    from sim2real.describe import describe_task, list_tasks

    if args.task:
        describe_task(args.task)
    else:
        list_tasks()


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from sim2real.training import PretrainConfig, pretrain

    cfg = PretrainConfig(
        task=args.task,
        algo=args.algo,
        steps=args.steps,
        seed=args.seed,
        randomize=not args.no_randomize,
        n_envs=args.n_envs,
        subproc=args.subproc,
        threads=args.threads,
        eval_world=args.eval_world,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
    )
    run_dir = pretrain(cfg, out=args.out, resume=args.resume)
    print(f"pretrained policy: {run_dir}/model.zip  (TensorBoard: tensorboard --logdir {run_dir})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sim2real", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("envs", help="list tasks, or show one task's randomisation and target worlds")
    e.add_argument("task", nargs="?")
    e.set_defaults(func=_cmd_envs)

    t = sub.add_parser("pretrain", help="pretrain a policy in the randomised sim world")
    t.add_argument("task")
    t.add_argument("--algo", choices=["ppo", "sac", "td3"], default=None, help="default: the spec's algorithm")
    t.add_argument("--steps", type=int, default=None, help="default: the spec's total_steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-randomize", action="store_true", help="train on the nominal sim only (baseline)")
    t.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: the spec's)")
    t.add_argument("--subproc", action="store_true", help="step envs in subprocesses")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for small MLPs)")
    t.add_argument("--eval-world", default="real", help="target world evaluated during pretraining")
    t.add_argument("--eval-every", type=int, default=None)
    t.add_argument("--checkpoint-every", type=int, default=50_000)
    t.add_argument("--out", default=None, help="run folder (default runs/pretrain/<task>-<dr|nominal>-<algo>-s<seed>)")
    t.add_argument("--resume", action="store_true", help="continue a killed run from its latest checkpoint")
    t.set_defaults(func=_cmd_pretrain)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (SpecError, UserError, FileExistsError, FileNotFoundError) as exc:
        print(f"sim2real {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; finished checkpoints are kept (rerun with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
