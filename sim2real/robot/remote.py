"""A robot over the network: a server that runs an env, and a Gymnasium env that talks to it.

``sim2real robot-server TASK --world real --port 5555`` runs a target world as its own process (a
stand-in for the robot's computer); :class:`RemoteRobotEnv` is an ordinary Gymnasium env on the
trainer's side, so a transfer plugs it in like any other robot::

    sim2real transfer policies/hopper-dr --target sim2real.robot.remote:RemoteRobotEnv \\
        --target-kwargs address=tcp://127.0.0.1:5555 token=$SIM2REAL_ROBOT_TOKEN

Wire format (ZeroMQ REQ/REP, no pickle anywhere): every message is a multipart of one UTF-8 JSON
header and at most one raw array frame.

==========  ===========================================  ===========================================
request     header                                       frame
==========  ===========================================  ===========================================
spaces      ``{"v": 1, "op": "spaces", "token": T}``      none
reset       ``{... "op": "reset", "seed": int | null}``   none
step        ``{... "op": "step"}``                         the action: ``act_dim`` float32, little-endian
==========  ===========================================  ===========================================

A reply is ``{"ok": true, ...}`` with the observation as ``obs_dim`` float64 little-endian bytes
(reset, step: plus ``reward``, ``terminated``, ``truncated`` and the JSON-safe part of ``info``), or
``{"ok": false, "error": "..."}``. The spaces reply carries the Box bounds as lists. Both sides check
sizes, dtypes and the token; a message that fails a check is answered (or treated) as an error.

Link faults on the trainer's side: a step that gets no answer within ``timeout_ms`` (server killed,
link down) or a malformed answer ends the episode (``truncated``, the reason in
``info["stop_reason"]``) because nobody knows whether the action reached the robot; the socket is
rebuilt, and the next reset retries ``retries`` times with exponential backoff before raising
:class:`RobotLinkError`. Nothing waits forever.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from sim2real.robot.session import episode_limit

PROTOCOL = 1
OBS_DTYPE = np.dtype("<f8")
ACT_DTYPE = np.dtype("<f4")


class RobotLinkError(ConnectionError):
    """The robot could not be reached (after the retries), or it answered with an error."""


def _zmq():
    try:
        import zmq
    except ImportError:
        raise RobotLinkError("the robot link needs pyzmq: pip install 'sim2real[robot]'") from None
    return zmq


def _json_safe(info: dict) -> dict:
    """The part of ``info`` that JSON carries exactly (numbers, strings, flags, short lists of numbers)."""
    out = {}
    for k, v in info.items():
        if isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v)):
            out[k] = v
        elif isinstance(v, np.ndarray) and v.size <= 64 and np.all(np.isfinite(v)):
            out[k] = v.tolist()
        elif isinstance(v, np.generic) and np.isfinite(v):
            out[k] = v.item()
    return out


class RobotServer:
    """Serve one env over ZeroMQ (see the module docstring for the messages).

    Args:
        env: the env to serve (a target world standing in for the robot, or the robot's own driver).
        port: TCP port; ``host`` defaults to loopback (use a VPN or SSH tunnel rather than 0.0.0.0).
        token: the shared secret every request must carry.
    """

    def __init__(self, env: gym.Env, port: int, token: str, host: str = "127.0.0.1"):
        zmq = _zmq()
        if not 1 <= port <= 65535:  # ZeroMQ takes 70000 and listens on another port without a word
            raise ValueError(f"--port {port}: a TCP port is 1..65535")
        self.env, self.token = env, token
        self.act_space, self.obs_space = env.action_space, env.observation_space
        self._ctx = zmq.Context()
        self.socket = self._ctx.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.address = f"tcp://{host}:{port}"
        self.socket.bind(self.address)
        self.requests = 0

    def _obs_frame(self, obs) -> bytes:
        return np.asarray(obs, dtype=OBS_DTYPE).ravel().tobytes()

    def handle(self, frames: list[bytes]) -> list[bytes]:
        """One request in, one reply out; never raises on a bad request."""
        try:
            header = json.loads(frames[0].decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
        except (UnicodeDecodeError, ValueError) as exc:
            return [json.dumps({"ok": False, "error": f"malformed header: {exc}"}).encode()]
        if header.get("v") != PROTOCOL:
            return [json.dumps({"ok": False, "error": f"protocol {header.get('v')!r}, this server speaks {PROTOCOL}"}).encode()]
        if not secrets.compare_digest(str(header.get("token", "")), self.token):
            return [json.dumps({"ok": False, "error": "wrong token"}).encode()]
        op = header.get("op")
        try:
            if op == "spaces":
                reply = {"ok": True, "obs_low": self.obs_space.low.tolist(), "obs_high": self.obs_space.high.tolist(),
                         "act_low": self.act_space.low.tolist(), "act_high": self.act_space.high.tolist(),
                         "dt": float(getattr(self.env.unwrapped, "dt", 0.0)),
                         "max_episode_steps": episode_limit(self.env)}
                return [json.dumps(reply, allow_nan=True).encode()]
            if op == "reset":
                seed = header.get("seed")
                obs, info = self.env.reset(seed=seed if isinstance(seed, int) else None)
                return [json.dumps({"ok": True, "info": _json_safe(info)}).encode(), self._obs_frame(obs)]
            if op == "step":
                if len(frames) != 2 or len(frames[1]) != self.act_space.shape[0] * ACT_DTYPE.itemsize:
                    return [json.dumps({"ok": False, "error": f"a step needs one frame of {self.act_space.shape[0]} "
                                                              "float32 (the action)"}).encode()]
                action = np.frombuffer(frames[1], dtype=ACT_DTYPE).astype(self.act_space.dtype)
                obs, reward, term, trunc, info = self.env.step(action)
                reply = {"ok": True, "reward": float(reward), "terminated": bool(term), "truncated": bool(trunc),
                         "info": _json_safe(info)}
                return [json.dumps(reply, allow_nan=True).encode(), self._obs_frame(obs)]
            return [json.dumps({"ok": False, "error": f"unknown op {op!r} (spaces, reset, step)"}).encode()]
        except Exception as exc:  # noqa: BLE001 - the robot's own error goes back to the trainer, the server lives on
            return [json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}).encode()]

    def serve(self, max_requests: int | None = None, should_stop: Callable[[], bool] | None = None) -> None:
        """Answer requests until ``max_requests`` (or forever; Ctrl-C stops)."""
        zmq = _zmq()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while max_requests is None or self.requests < max_requests:
            if should_stop is not None and should_stop():
                break
            if not poller.poll(100):
                continue
            frames = self.socket.recv_multipart()
            self.socket.send_multipart(self.handle(frames))
            self.requests += 1

    def close(self) -> None:
        self.socket.close(0)
        self._ctx.term()
        self.env.close()


class RemoteRobotEnv(gym.Env):
    """A Gymnasium env whose steps run on a :class:`RobotServer` (see the module docstring).

    Args:
        address: e.g. ``tcp://127.0.0.1:5555``.
        token: the server's shared secret.
        timeout_ms: how long one request may wait for its answer.
        retries: reconnect attempts (with exponential backoff from ``backoff_s``) before a reset gives up.
    """

    metadata = {"render_modes": []}

    def __init__(self, address: str = "tcp://127.0.0.1:5555", token: str = "", timeout_ms: int = 2000,
                 retries: int = 3, backoff_s: float = 0.2):
        self.address, self.token = address, str(token)
        self.timeout_ms, self.retries, self.backoff_s = int(timeout_ms), int(retries), float(backoff_s)
        self._zmq = _zmq()
        self._ctx = self._zmq.Context()
        self._socket = None
        self.link_faults = 0
        self._last_obs = None
        spaces = self._request_with_retries({"op": "spaces"})[0]
        self.observation_space = gym.spaces.Box(np.array(spaces["obs_low"], dtype=np.float64),
                                                np.array(spaces["obs_high"], dtype=np.float64), dtype=np.float64)
        self.action_space = gym.spaces.Box(np.array(spaces["act_low"], dtype=np.float32),
                                           np.array(spaces["act_high"], dtype=np.float32), dtype=np.float32)
        self.dt = spaces.get("dt", 0.0)
        self.max_episode_steps = spaces.get("max_episode_steps")  # the robot side ends its episodes

    # ---- the link
    def _connect(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
        self._socket = self._ctx.socket(self._zmq.REQ)
        self._socket.setsockopt(self._zmq.LINGER, 0)
        self._socket.setsockopt(self._zmq.RCVTIMEO, self.timeout_ms)
        self._socket.setsockopt(self._zmq.SNDTIMEO, self.timeout_ms)
        self._socket.connect(self.address)

    def _request(self, header: dict, frame: bytes | None = None) -> tuple[dict, np.ndarray | None]:
        """One request and its checked answer; RobotLinkError on timeout or a malformed or failed answer."""
        if self._socket is None:
            self._connect()
        msg = [json.dumps({"v": PROTOCOL, "token": self.token, **header}).encode()] + ([frame] if frame else [])
        try:
            self._socket.send_multipart(msg)
            frames = self._socket.recv_multipart()
        except self._zmq.Again:
            self._connect()  # a REQ socket that missed its answer is stuck: rebuild it
            raise RobotLinkError(f"{self.address}: no answer within {self.timeout_ms} ms") from None
        try:
            reply = json.loads(frames[0].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RobotLinkError(f"{self.address}: malformed answer (header is not JSON)") from None
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise RobotLinkError(f"{self.address}: the robot answered with an error: {error}")
        obs = None
        if header["op"] in ("reset", "step"):
            expected = self.observation_space.shape[0] * OBS_DTYPE.itemsize
            if len(frames) != 2 or len(frames[1]) != expected:
                raise RobotLinkError(f"{self.address}: malformed answer (observation frame of "
                                     f"{len(frames[1]) if len(frames) > 1 else 0} bytes, expected {expected})")
            obs = np.frombuffer(frames[1], dtype=OBS_DTYPE).copy()
        return reply, obs

    def _request_with_retries(self, header: dict) -> tuple[dict, np.ndarray | None]:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return self._request(header)
            except RobotLinkError as exc:
                if "answered with an error" in str(exc) or attempt == self.retries:
                    raise RobotLinkError(f"{exc} (gave up after {attempt + 1} attempts)") from None
                self.link_faults += 1
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # ---- the env
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        reply, obs = self._request_with_retries({"op": "reset", "seed": seed})
        self._last_obs = obs
        return obs, reply.get("info", {})

    def step(self, action):
        frame = np.asarray(action, dtype=ACT_DTYPE).ravel().tobytes()
        try:
            reply, obs = self._request({"op": "step"}, frame)
        except RobotLinkError as exc:
            # Did the action arrive? Nobody knows: the episode ends here, honestly labelled, and nothing waits.
            self.link_faults += 1
            return self._last_obs, 0.0, False, True, {"stop_reason": f"link fault: {exc}"}
        self._last_obs = obs
        return obs, reply["reward"], reply["terminated"], reply["truncated"], reply.get("info", {})

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        self._ctx.term()
