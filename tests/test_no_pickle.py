"""A crafted run folder whose pickles would run code: nothing executes on evaluate, transfer, export or resume."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest

from sim2real.learning.evaluation import evaluate
from sim2real.learning.loading import load_for_evaluation
from sim2real.learning.pretrain import PretrainConfig, pretrain
from sim2real.transfer.run import TransferConfig, transfer
from tests.conftest import DATA, TINY


class Payload:
    """Unpickling this writes a marker file: what a malicious run folder would do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def poison(run_dir: Path, marker: Path) -> None:
    """Every pickle in the folder becomes the payload; every model zip's serialized entries too."""
    blob = pickle.dumps(Payload(marker))
    for pkl in run_dir.rglob("*.pkl"):
        pkl.write_bytes(blob)
    for zpath in run_dir.rglob("*.zip"):
        with zipfile.ZipFile(zpath) as zf:
            files = {n: zf.read(n) for n in zf.namelist()}
        data = json.loads(files["data"])
        for value in data.values():
            if isinstance(value, dict) and ":serialized:" in value:
                value[":serialized:"] = base64.b64encode(blob).decode()
        files["data"] = json.dumps(data).encode()
        with zipfile.ZipFile(zpath, "w") as zf:
            for n, b in files.items():
                zf.writestr(n, b)
        # The checkpoint's manifest records sizes: keep it valid, as an attacker would.
        manifest = zpath.with_name(f"{zpath.stem}.manifest.json")
        if manifest.exists():
            m = json.loads(manifest.read_text())
            m["files"] = {name: (zpath.parent / name).stat().st_size for name in m["files"]}
            manifest.write_text(json.dumps(m))


@pytest.fixture
def poisoned(tmp_path) -> tuple[Path, Path]:
    run = pretrain(PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=256, eval_every=128, eval_episodes=1,
                                  checkpoint_every=128, overrides=TINY), out=tmp_path / "run")
    marker = tmp_path / "PWNED"
    poison(run, marker)
    return run, marker


def test_the_payload_does_run_code_when_unpickled(poisoned):
    run, marker = poisoned
    pickle.loads((run / "vecnormalize.pkl").read_bytes())  # the test's own check that the payload is live
    assert marker.exists()


def test_nothing_in_a_poisoned_run_folder_executes(poisoned, tmp_path):
    run, marker = poisoned
    pre, spec, model = load_for_evaluation(run)  # evaluate's path
    evaluate(model, lambda: __import__("sim2real.worlds.make", fromlist=["x"]).make_target_env(spec.path, "heavy"),
             1, obs_rms=pre.obs_rms)
    transfer(TransferConfig(policy=str(run), target="heavy", strategy="finetune", budget=128, eval_every=128,
                            eval_episodes=1), out=tmp_path / "t", quiet=True)
    from sim2real.robot.export import export_policy

    export_policy(run, "torchscript", out=tmp_path / "p.pt", samples=10)
    # pretrain --resume from a poisoned checkpoint
    shutil.copytree(run, tmp_path / "resume")
    (tmp_path / "resume" / "model.zip").unlink()
    for f in (tmp_path / "resume" / "checkpoints").glob("step_000000256*"):
        f.unlink()
    pretrain(PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=256, eval_every=128, eval_episodes=1,
                            checkpoint_every=128, overrides=TINY), out=tmp_path / "resume", resume=True)
    assert not marker.exists()
