"""The transition log: every step taken on a target, appended to disk as it happens.

On a robot each step costs time and wear, so nothing it produced may be lost to a crash.
:class:`TransitionLog` wraps the target env and appends one JSON line per reset and per step to
``transitions.jsonl`` in the run folder, flushed to the OS at once (``kill -9`` of the trainer
loses at most the step being written) and synced to disk when an episode closes. Lines are only
ever appended: a resumed run reopens the same file and numbers its episodes on.

Records (one JSON object per line, floats written exactly)::

    {"kind": "reset", "episode": 3, "phase": "train", "time": 1764.2, "obs": [...]}
    {"kind": "step",  "episode": 3, "t": 0, "time": ..., "action": [...], "applied": [...] | null,
     "obs": [...], "reward": 1.2, "terminated": false, "truncated": false, "reason": null}
    {"kind": "end",   "episode": 3, "steps": 57, "return": 80.1, "reason": "terminated" | "truncated" | ...}

``action`` is what the policy commanded, ``applied`` what reached the robot where known (the safety
layer's clipped action, or the env's own ``info["applied_action"]``), ``obs`` in a step record is the
observation after it. :func:`read_log` turns the file into episodes of numpy arrays; an episode
without an ``end`` line was cut short by a crash and comes back with ``complete=False``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

LOG_NAME = "transitions.jsonl"


def _list(x) -> list | None:
    return None if x is None else np.asarray(x, dtype=np.float64).ravel().tolist()


class TransitionLog(gym.Wrapper):
    """Append every reset and step of ``env`` to ``path`` (see the module docstring for the records).

    Args:
        env: the target env (a robot's, or a stand-in world), with the safety layer inside it if any.
        path: the log file; appended to if it exists (a resumed run), created otherwise.

    ``phase`` ("train" or "eval") is set by the trainer and written into each episode's reset line.
    """

    def __init__(self, env: gym.Env, path: str | Path):
        super().__init__(env)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.episode = _next_episode(self.path)
        self.phase = "train"
        self._file = self.path.open("a", encoding="utf-8")
        if self._file.tell() and not _ends_with_newline(self.path):
            self._file.write("\n")  # a line cut by a kill stays on its own line (skipped when read)
        self._t = 0
        self._return = 0.0
        self._open = False

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n")
        self._file.flush()

    def _close_episode(self, reason: str) -> None:
        if self._open:
            self._write({"kind": "end", "episode": self.episode, "steps": self._t, "return": self._return,
                         "reason": reason})
            os.fsync(self._file.fileno())
            self._open = False
            self.episode += 1

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # An episode left open (evaluation cut in, or the trainer reset early) ends here, honestly labelled.
        self._close_episode("interrupted")
        obs, info = self.env.reset(seed=seed, options=options)
        self._write({"kind": "reset", "episode": self.episode, "phase": self.phase, "time": time.time(),
                     "seed": seed, "obs": _list(obs)})
        self._t, self._return, self._open = 0, 0.0, True
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        reason = info.get("stop_reason")
        applied = info.get("applied_action")
        self._write({"kind": "step", "episode": self.episode, "t": self._t, "time": time.time(),
                     "action": _list(action), "applied": _list(applied), "obs": _list(obs), "reward": float(reward),
                     "terminated": bool(terminated), "truncated": bool(truncated), "reason": reason})
        self._t += 1
        self._return += float(reward)
        if terminated or truncated:
            self._close_episode(reason or ("terminated" if terminated else "truncated"))
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        if not self._file.closed:
            self._close_episode("closed")
            self._file.close()
        super().close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _records(path: Path):
    """The log's records; a line cut short by a kill is skipped."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _next_episode(path: Path) -> int:
    if not path.exists() or path.stat().st_size == 0:
        return 0
    last = -1
    for rec in _records(path):
        last = max(last, rec.get("episode", -1))
    return last + 1


@dataclass
class Episode:
    """One episode from the log: ``observations`` has one row more than ``actions`` (the reset observation)."""

    episode: int
    phase: str
    observations: np.ndarray
    actions: np.ndarray
    applied: np.ndarray | None
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    times: np.ndarray
    reason: str | None
    complete: bool
    seed: int | None = None
    stop_reasons: list = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.actions)


def read_log(path: str | Path) -> list[Episode]:
    """The episodes in a transition log (a run folder or the ``transitions.jsonl`` in it), oldest first."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no transition log (a run on a target writes {LOG_NAME} in its folder)")
    raw: dict[int, dict] = {}
    for rec in _records(path):
        ep = raw.get(rec["episode"])
        if rec["kind"] == "reset":
            raw[rec["episode"]] = {"reset": rec, "steps": [], "end": None}
        elif ep is not None and rec["kind"] == "step":
            ep["steps"].append(rec)
        elif ep is not None and rec["kind"] == "end":
            ep["end"] = rec
    episodes = []
    for number, ep in sorted(raw.items()):
        steps, reset = ep["steps"], ep["reset"]
        act_dim = len(steps[0]["action"]) if steps else 0
        applied = [s["applied"] for s in steps]
        episodes.append(Episode(
            episode=number, phase=reset.get("phase", "train"), seed=reset.get("seed"),
            observations=np.array([reset["obs"]] + [s["obs"] for s in steps], dtype=np.float64),
            actions=np.array([s["action"] for s in steps], dtype=np.float64).reshape(len(steps), act_dim),
            applied=(np.array(applied, dtype=np.float64) if steps and all(a is not None for a in applied) else None),
            rewards=np.array([s["reward"] for s in steps], dtype=np.float64),
            terminations=np.array([s["terminated"] for s in steps], dtype=bool),
            truncations=np.array([s["truncated"] for s in steps], dtype=bool),
            times=np.array([reset["time"]] + [s["time"] for s in steps], dtype=np.float64),
            reason=ep["end"]["reason"] if ep["end"] else None,
            complete=ep["end"] is not None,
            stop_reasons=[s["reason"] for s in steps if s.get("reason")],
        ))
    return episodes


def transitions(episodes: list[Episode], phase: str | None = "train") -> dict[str, np.ndarray]:
    """Flat ``(obs, action, reward, next_obs, terminated)`` arrays, e.g. to refill a replay buffer."""
    chosen = [e for e in episodes if e.steps and (phase is None or e.phase == phase)]
    if not chosen:
        return {k: np.zeros((0,)) for k in ("obs", "action", "reward", "next_obs", "terminated")}
    return {
        "obs": np.concatenate([e.observations[:-1] for e in chosen]),
        "action": np.concatenate([e.actions for e in chosen]),
        "reward": np.concatenate([e.rewards for e in chosen]),
        "next_obs": np.concatenate([e.observations[1:] for e in chosen]),
        "terminated": np.concatenate([e.terminations for e in chosen]),
    }


def to_minari(episodes: list[Episode], dataset_id: str, directory: str | Path | None = None,
              phase: str | None = None, description: str | None = None):
    """Write logged episodes as a Minari dataset (the Farama offline-RL format); returns the dataset.

    Episodes cut short (an evaluation cutting in, a kill) end with ``truncations[-1] = True``, which is
    what they were. ``directory`` sets where Minari stores it (default: Minari's own, ~/.minari).
    """
    try:
        import minari
        from minari.data_collector import EpisodeBuffer
    except ImportError:
        raise ImportError("exporting to Minari needs minari: pip install minari") from None
    import os

    chosen = [e for e in episodes if e.steps and (phase is None or e.phase == phase)]
    if not chosen:
        raise ValueError(f"no episodes with steps{f' in phase {phase!r}' if phase else ''} to export")
    buffers = []
    for i, e in enumerate(chosen):
        trunc = e.truncations.copy()
        if not e.terminations[-1]:
            trunc[-1] = True
        buffers.append(EpisodeBuffer(id=i, seed=e.seed, observations=e.observations.astype(np.float32),
                                     actions=e.actions.astype(np.float32), rewards=e.rewards.tolist(),
                                     terminations=e.terminations.tolist(), truncations=trunc.tolist()))
    obs_dim, act_dim = chosen[0].observations.shape[1], chosen[0].actions.shape[1]
    old = os.environ.get("MINARI_DATASETS_PATH")
    if directory is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(directory).resolve())
    try:
        return minari.create_dataset_from_buffers(
            dataset_id, buffers, algorithm_name="sim2real transfer",
            observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            action_space=gym.spaces.Box(-np.inf, np.inf, (act_dim,), np.float32),
            description=description or "transitions recorded on a target by sim2real (transitions.jsonl)")
    finally:
        if directory is not None:
            if old is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


def refill_replay_buffer(model, episodes: list[Episode], inputs=None) -> int:
    """Put every logged training transition into an off-policy model's (empty) replay buffer; returns how many.

    A resumed robot run learns from everything the robot did, including the steps after its last
    checkpoint. Observations are composed with the policy's ``inputs`` as they were live; actions
    are scaled to the policy's [-1, 1] the way SB3 stores them.
    """
    from sim2real.worlds.inputs import compose_episode

    buffer = model.replay_buffer
    buffer.pos, buffer.full = 0, False
    added = 0
    for e in episodes:
        if e.phase != "train" or not e.steps:
            continue
        obs = compose_episode(e.observations, e.actions, inputs).astype(np.float32)
        scaled = model.policy.scale_action(np.clip(e.actions, model.action_space.low, model.action_space.high))
        for t in range(e.steps):
            term, trunc = bool(e.terminations[t]), bool(e.truncations[t])
            buffer.add(obs[t][None], obs[t + 1][None], scaled[t][None], np.array([e.rewards[t]]),
                       np.array([term or trunc]), [{"TimeLimit.truncated": trunc and not term}])
            added += 1
    return added
