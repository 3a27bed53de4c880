"""Where a study's runs execute: local worker processes (default) or a Ray cluster.

Both hand back ``concurrent.futures.Future`` objects, so the study's loop (progress,
failures, skipping finished runs) is the same for either.

* ``LocalExecutor``: spawned processes on this machine, one torch thread each.
* ``RayExecutor``: one Ray task (1 CPU) per run, on a local Ray or a cluster
  (``address="auto"`` or ``ray://host:10001``). Nothing assumes a shared disk:
  the policy travels to the workers through Ray's object store, and each run
  comes back as its folder's files, unpacked into the study folder by the
  driver (atomically: a half-copied run never looks finished). Every node needs
  sim2real installed (same version); a spec given as a file path must exist there too.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sim2real.learning.artifacts import atomic_write_text
from sim2real.learning.loading import policy_files

EXECUTORS = ("local", "ray")


def die_with_parent() -> None:
    """In a worker: ask Linux to kill this process when the study that spawned it dies (even by kill -9).

    Without it a killed study leaves its workers running (blocked on a pipe, hundreds of MB each),
    and a late one could write into a folder a re-run has since finished.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


class LocalExecutor:
    """Spawned worker processes (fork after torch has started threads is fragile)."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                         initializer=die_with_parent)

    def submit(self, fn: Callable[..., dict], policy: str, run_dir: Path, *args: Any) -> Future:
        """Run ``fn(policy, run_dir, *args)`` in a worker process."""
        return self._pool.submit(fn, policy, str(run_dir), *args)

    def shutdown(self) -> None:
        self._pool.shutdown()


def pack_files(files: dict[str, Path]) -> bytes:
    """Files (archive name -> path) as an in-memory tar archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, path in files.items():
            tar.add(path, arcname=name)
    return buf.getvalue()


def pack_dir(directory: Path) -> bytes:
    """A folder's contents as an in-memory tar archive."""
    return pack_files({name: directory / name for name in sorted(os.listdir(directory))})


def unpack_dir(blob: bytes, directory: Path) -> None:
    """Unpack an archive from :func:`pack_dir` into ``directory`` via a sibling temp folder and one rename."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(tmp, filter="data")  # "data": no absolute paths, links out of the folder or devices
    if directory.exists():  # something already there: keep it aside, never delete
        os.replace(directory, tempfile.mkdtemp(prefix=f".{directory.name}-replaced-", dir=directory.parent))
    os.replace(tmp, directory)


def pack_policy(policy: str | Path) -> bytes:
    """The files a worker needs to load a pretrained policy, laid out as a zoo entry."""
    run_dir, model_zip, npz = policy_files(policy)
    files = {"model.zip": model_zip, "run.json": run_dir / "run.json"}
    if npz.exists():
        files["obs_rms.npz"] = npz
    return pack_files(files)


def _run_on_ray_worker(fn: Callable[..., dict], policy_blob: bytes, *args: Any) -> tuple[dict, bytes | None]:
    """Inside a Ray task: unpack the policy, do the run in a scratch folder, return its status and files."""
    with tempfile.TemporaryDirectory(prefix="sim2real-run-") as scratch:
        policy_dir, run_dir = Path(scratch) / "policy", Path(scratch) / "run"
        unpack_dir(policy_blob, policy_dir)
        status = fn(str(policy_dir), str(run_dir), *args)
        files = pack_dir(run_dir) if run_dir.exists() else None
    return status, files


def _record_policy(run_dir: Path, policy: str) -> None:
    """The run ran on an unpacked copy; its run.json names the policy as the study was given it."""
    info = run_dir / "run.json"
    if info.exists():
        data = json.loads(info.read_text())
        data["config"]["policy"] = policy
        atomic_write_text(info, json.dumps(data, indent=2))


class RayExecutor:
    """One Ray task per run on a local Ray instance or a cluster; results land in the study folder."""

    def __init__(self, workers: int, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray: Ray is not installed; pip install 'sim2real[ray]' "
                             "(or pip install ray) on every machine of the cluster") from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            # A local Ray gets `workers` CPUs; a cluster brings its own.
            kwargs = {"num_cpus": workers} if address is None else {}
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, **kwargs)
            except (ConnectionError, TimeoutError, RuntimeError) as exc:
                raise ValueError(f"--ray-address {address}: cannot reach a Ray cluster there ({exc}); start one with "
                                 "`ray start --head` (then --ray-address auto) or check the address") from None
        self.workers = int(ray.cluster_resources().get("CPU", workers)) if address is not None else workers
        self._task = ray.remote(num_cpus=1, max_retries=0)(_run_on_ray_worker)
        self._policies: dict[str, Any] = {}

    def submit(self, fn: Callable[..., dict], policy: str, run_dir: Path, *args: Any) -> Future:
        """Run ``fn(policy, run_dir, *args)`` as a Ray task; its folder lands at ``run_dir`` when it ends."""
        if policy not in self._policies:  # one upload per study, shared by every task
            self._policies[policy] = self._ray.put(pack_policy(policy))
        remote = self._task.remote(fn, self._policies[policy], *args).future()
        local: Future = Future()

        def land(f: Future) -> None:
            try:
                status, files = f.result()
                if files is not None:
                    unpack_dir(files, run_dir)
                    _record_policy(run_dir, policy)
                local.set_result(status)
            except BaseException as exc:  # noqa: BLE001 - handed to the study loop, which records it
                local.set_exception(exc)

        remote.add_done_callback(land)
        return local

    def shutdown(self) -> None:
        if self._started_here:
            self._ray.shutdown()


def check_executor(kind: str, address: str | None = None) -> None:
    """Reject an unknown executor (or an address it cannot use) before any run starts."""
    if kind not in EXECUTORS:
        raise ValueError(f"--executor: unknown executor {kind!r}; allowed: {', '.join(EXECUTORS)}")
    if kind == "local" and address:
        raise ValueError(f"--ray-address {address!r} only applies with --executor ray")


def make_executor(kind: str, workers: int, address: str | None = None) -> LocalExecutor | RayExecutor:
    check_executor(kind, address)
    return LocalExecutor(workers) if kind == "local" else RayExecutor(workers, address)
