"""Export: one file with normalisation and policy inputs folded in, equal to SB3's predict, runnable without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sim2real.learning.evaluation import evaluate  # noqa: E402
from sim2real.learning.loading import load_for_evaluation  # noqa: E402
from sim2real.learning.pretrain import PretrainConfig, pretrain  # noqa: E402
from sim2real.robot.export import PARITY_TOLERANCE, ExportError, export_policy  # noqa: E402
from sim2real.worlds.inputs import with_inputs  # noqa: E402
from sim2real.worlds.make import make_target_env  # noqa: E402
from tests.conftest import DATA, TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "run_onnx_policy.py"


@pytest.fixture(scope="module")
def history_policy(tmp_path_factory) -> Path:
    """A tiny normalised PPO policy whose inputs are 2 past observations and actions."""
    out = tmp_path_factory.mktemp("hist") / "run"
    cfg = PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=128, eval_every=128, eval_episodes=1,
                         checkpoint_every=128, overrides=TINY, inputs={"history": 2})
    return pretrain(cfg, out=out)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_sb3_predict(tiny_pretrained, history_policy, tmp_path, fmt):
    for policy in (tiny_pretrained, history_policy):
        path = export_policy(policy, fmt, out=tmp_path / f"{policy.name}.{fmt}", samples=500)
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["parity_max_abs_diff"] <= PARITY_TOLERANCE
        assert card["control_hz"] == pytest.approx(25.0)  # InvertedPendulum: dt 0.04 s
    assert card["observation_inputs"] == {"last_action": True, "history": 2}
    assert card["inputs"] == {"obs": [4], "past_actions": [2], "past_obs": [8]}


def _example_returns(onnx: Path, spec_path: str, episodes: int) -> list[float]:
    """The example's OnnxPolicy driving the nominal world, in a process where torch cannot be imported."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['stable_baselines3'] = None\n"
        f"sys.path.insert(0, {str(EXAMPLE.parent)!r})\n"
        "import json, runpy\n"
        "from run_onnx_policy import OnnxPolicy\n"
        "from sim2real.worlds.make import make_target_env\n"  # sim2real's worlds need no torch either
        f"policy = OnnxPolicy({str(onnx)!r}); env = make_target_env({spec_path!r}, 'nominal'); out = []\n"
        f"for i in range({episodes}):\n"
        "    obs, _ = env.reset(seed=20000 + i); policy.reset(); total, done = 0.0, False\n"
        "    while not done:\n"
        "        obs, r, term, trunc, _ = env.step(policy(obs)); total += r; done = term or trunc\n"
        "    out.append(total)\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_example_runs_the_policy_without_torch_and_scores_what_sim2real_measures(history_policy, tmp_path):
    onnx = export_policy(history_policy, "onnx", out=tmp_path / "policy.onnx", samples=100)
    pre, spec, model = load_for_evaluation(history_policy)
    expected = evaluate(model, lambda: with_inputs(make_target_env(spec.path, "nominal"), pre.inputs), 3,
                        obs_rms=pre.obs_rms, seed=20000).returns
    got = _example_returns(onnx, spec.path, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-3)


def test_unknown_format_is_a_clear_error(tiny_pretrained):
    with pytest.raises(ExportError, match="allowed: onnx, torchscript"):
        export_policy(tiny_pretrained, "tflite")


@pytest.mark.slow
def test_every_zoo_entry_exports_within_tolerance(tmp_path):
    for entry in sorted((ROOT / "policies").iterdir()):
        if (entry / "model.zip").exists():
            path = export_policy(entry, "onnx", out=tmp_path / f"{entry.name}.onnx", samples=1000)
            assert json.loads(path.with_suffix(".json").read_text())["parity_max_abs_diff"] <= PARITY_TOLERANCE
