"""Pretraining mechanics: the run folder explains itself; a killed run resumes to the same total."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import PPO

from sim2real.learning.loading import policy_files
from sim2real.learning.pretrain import PretrainConfig, pretrain

from .conftest import DATA, TINY


def cfg(steps=256):
    return PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=steps, eval_every=128, eval_episodes=1,
                          checkpoint_every=128, overrides=TINY)


def test_run_folder_explains_itself(tiny_pretrained):
    info = json.loads((tiny_pretrained / "run.json").read_text())
    assert {"config", "command", "versions", "git_commit", "started"} <= set(info)
    assert info["config"]["seed"] == 0 and info["versions"]["stable_baselines3"]
    for name in ("model.zip", "vecnormalize.pkl", "obs_rms.npz", "evaluations.csv", "best.zip"):
        assert (tiny_pretrained / name).exists(), name
    assert any((tiny_pretrained / "tb").rglob("events.out.tfevents.*"))


def test_pretraining_writes_a_custom_scalars_layout_tensorboard_reads(tiny_pretrained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    acc = EventAccumulator(str(tiny_pretrained / "tb" / "layout"))
    acc.Reload()
    proto = acc.Tensors(metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto
    layout = layout_pb2.Layout.FromString(proto.string_val[0])
    tags = [tag for chart in layout.category[0].chart for tag in chart.multiline.tag]
    assert "eval/.*/mean_return" in tags and "randomization/.*" in tags


def test_killed_run_resumes_to_the_same_total_and_tensorboard_run(tmp_path):
    out = tmp_path / "run"
    pretrain(cfg(), out=out)
    # What a kill after the first checkpoint leaves behind: no final model, no later checkpoint.
    (out / "model.zip").unlink()
    for f in (out / "checkpoints").glob("step_000000256*"):
        f.unlink()
    assert PPO.load(out / "checkpoints" / "step_000000128.zip").num_timesteps == 128
    with pytest.raises(FileExistsError, match="use --resume"):
        pretrain(cfg(), out=out)
    # The best checkpoint so far must survive a resume whose evaluations do not beat it.
    best = json.loads((out / "best.json").read_text())
    # best.zip is picked on the first evaluated world (sim for a randomised run): unbeatable on every world.
    # Only the rule's value is unbeatable: the means stay as measured, so reading them instead would fail here.
    (out / "best.json").write_text(json.dumps({**best, "selection": {**best["selection"], "value": 1e9}}))
    best_zip = (out / "best.zip").read_bytes()
    pretrain(cfg(), out=out, resume=True)
    assert PPO.load(out / "model.zip").num_timesteps == 256
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["layout", "pretrain_1"]  # no second run
    assert (out / "best.zip").read_bytes() == best_zip
    assert json.loads((out / "best.json").read_text())["selection"]["value"] == 1e9


def test_a_resume_keeps_the_selection_rule_and_reads_an_older_best_json_as_the_mean(tmp_path):
    from dataclasses import replace

    out = tmp_path / "run"
    pretrain(cfg(), out=out)
    (out / "model.zip").unlink()
    for f in (out / "checkpoints").glob("step_000000256*"):
        f.unlink()
    with pytest.raises(ValueError, match="--select-stat median: .*run.json was started with --select-stat mean"):
        pretrain(replace(cfg(), select_stat="median"), out=out, resume=True)
    # A best.json written before the rule was recorded: its first world's mean is the value to beat.
    best = json.loads((out / "best.json").read_text())
    del best["selection"]
    (out / "best.json").write_text(json.dumps({**best, "sim": 1e9}))
    best_zip = (out / "best.zip").read_bytes()
    pretrain(cfg(), out=out, resume=True)
    assert (out / "best.zip").read_bytes() == best_zip


def test_select_floor_keeps_best_only_among_evaluations_that_clear_the_nominal_return(tmp_path):
    from dataclasses import replace

    pretrain(replace(cfg(), select_floor=1e9), out=tmp_path / "high")
    assert not (tmp_path / "high" / "best.zip").exists()  # no evaluation cleared it: model.zip stands alone
    pretrain(replace(cfg(), select_floor=-1e9), out=tmp_path / "low")
    best = json.loads((tmp_path / "low" / "best.json").read_text())
    assert best["nominal"] >= -1e9 and (tmp_path / "low" / "best.zip").exists()


def test_median_selection_keeps_every_episode_and_every_evaluated_policy(tmp_path):
    """best.zip by the median episode; every episode in the JSON log; each evaluated policy kept, loadable."""
    from dataclasses import replace

    out = tmp_path / "run"
    pretrain(replace(cfg(), eval_episodes=3, select_stat="median", keep_evaluated=True), out=out)
    log = [json.loads(line) for line in (out / "evaluations_episodes.jsonl").read_text().splitlines()]
    rows = np.loadtxt(out / "evaluations.csv", delimiter=",", skiprows=1)
    assert [e["step"] for e in log] == rows[:, 0].astype(int).tolist() == [0, 128, 256]
    assert all(len(e["returns"][w]) == len(e["lengths"][w]) == 3 for e in log for w in ("sim", "nominal"))
    assert np.allclose([np.mean(e["returns"]["sim"]) for e in log], rows[:, 1], rtol=1e-5)
    # The randomised world's draws beside its returns (the nominal world has none): sim2real failures reads them.
    assert all(len(e["draws"]["sim"]) == 3 and "body_mass/pole" in e["draws"]["sim"][0] for e in log)
    assert all("nominal" not in e["draws"] for e in log)
    best = json.loads((out / "best.json").read_text())
    medians = {e["step"]: float(np.median(e["returns"]["sim"])) for e in log if e["step"] > 0}
    assert best["selection"] == {"world": "sim", "stat": "median", "value": max(medians.values())}
    assert best["step"] == max(s for s, m in medians.items() if m == max(medians.values()))  # ties: the later
    kept = sorted(p.name for p in (out / "evaluated").glob("step_*.zip"))
    assert kept == ["step_000000000.zip", "step_000000128.zip", "step_000000256.zip"]
    assert PPO.load(out / "evaluated" / "step_000000128.zip").num_timesteps == 128
    assert policy_files(out / "evaluated" / "step_000000128.zip")[0] == out  # sim2real evaluate finds its run

    from sim2real.learning.selection import Rule, pick, read_episode_log

    assert pick(read_episode_log(out), Rule(stat="median"))["step"] == best["step"]  # the same rule afterwards


def test_resume_moves_the_per_episode_log_past_the_checkpoint_aside(tmp_path):
    out = tmp_path / "run"
    pretrain(cfg(), out=out)
    (out / "model.zip").unlink()
    for f in (out / "checkpoints").glob("step_000000256*"):
        f.unlink()
    pretrain(cfg(), out=out, resume=True)
    steps = [json.loads(line)["step"] for line in (out / "evaluations_episodes.jsonl").read_text().splitlines()]
    assert steps == [0, 128, 256]  # 256 measured again, once
    aside = (out / "evaluations_episodes.superseded.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in aside] == [256]


def test_a_line_torn_by_a_kill_is_set_aside_on_resume(tmp_path):
    out = tmp_path / "run"
    pretrain(cfg(), out=out)
    (out / "model.zip").unlink()
    for f in (out / "checkpoints").glob("step_000000256*"):
        f.unlink()
    log = out / "evaluations_episodes.jsonl"
    log.write_text(log.read_text() + '{"step": 384, "retu')  # killed while writing
    pretrain(cfg(), out=out, resume=True)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [0, 128, 256]
    assert (out / "evaluations_episodes.superseded.jsonl").read_text().splitlines()[-1] == '{"step": 384, "retu'


SAC_TINY = {"learning_starts": 32, "batch_size": 16, "policy_kwargs": {"net_arch": [16, 16]}}


def weights(run):
    import torch

    with zipfile.ZipFile(run / "model.zip") as zf:
        return {name: torch.load(zf.open(name), weights_only=True) for name in zf.namelist() if name.endswith(".pth")}


def same(x, y):
    """Tensors, dicts and lists equal to the last bit (policy and optimiser states)."""
    import torch

    if isinstance(x, torch.Tensor):
        return torch.equal(x, y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
    return x == y


@pytest.mark.parametrize("stepper", ["batch", "gym"])
@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_a_resumed_run_is_the_run_that_was_interrupted(algo, stepper, tmp_path):
    """Kill after the first checkpoint, resume: the same weights and the same evaluations, to the last bit, on
    the batched world (its state is in the checkpoint) and on Gymnasium envs (episodes restart at checkpoints)."""
    if algo == "ppo":
        config, cut_at = cfg(), "step_000000256"
    else:  # two envs (the spec's algorithm is PPO, so n_envs is set here)
        config = PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), algo="sac", n_envs=2, steps=128, eval_every=64,
                                eval_episodes=1, checkpoint_every=64, overrides=SAC_TINY)
        cut_at = "step_000000128"
    config.stepper = stepper

    whole = pretrain(config, out=tmp_path / "whole")
    cut = pretrain(config, out=tmp_path / "cut")
    (cut / "model.zip").unlink()
    for f in (cut / "checkpoints").glob(f"{cut_at}*"):
        f.unlink()
    assert list((cut / "checkpoints").glob("step_*_state.npz"))
    pretrain(config, out=cut, resume=True)
    a, b = weights(whole), weights(cut)
    assert set(a) == set(b) and "policy.pth" in a
    assert json.loads((cut / "run.json").read_text())["config"]["stepper"] == stepper
    assert all(same(a[k], b[k]) for k in a)  # policy and optimiser states
    assert (whole / "evaluations.csv").read_text() == (cut / "evaluations.csv").read_text()


def test_a_resumed_transfer_is_the_transfer_that_was_interrupted(tiny_pretrained, tmp_path):
    """A transfer killed after a checkpoint and resumed ends with the uninterrupted run's weights, to the bit."""
    from sim2real.transfer.run import TransferConfig, transfer

    config = TransferConfig(policy=str(tiny_pretrained), target="heavy", strategy="finetune", budget=512,
                            eval_every=128, eval_episodes=1, seed=3)
    whole = transfer(config, out=tmp_path / "whole", quiet=True)
    cut = transfer(config, out=tmp_path / "cut", quiet=True)
    checkpoints = sorted((cut / "checkpoints").glob("step_*.zip"))
    assert len(checkpoints) == 2
    for f in [cut / "model.zip", cut / "result.json", *(cut / "checkpoints").glob(f"{checkpoints[-1].stem}*")]:
        f.unlink()  # what a kill after the first kept checkpoint leaves
    transfer(config, out=cut, quiet=True, resume=True)
    a, b = weights(whole), weights(cut)
    assert all(same(a[k], b[k]) for k in a)
    assert (whole / "evaluations.csv").read_text() == (cut / "evaluations.csv").read_text()


def test_finished_run_is_not_overwritten(tiny_pretrained):
    before = (tiny_pretrained / "model.zip").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        pretrain(cfg(), out=tiny_pretrained)
    assert (tiny_pretrained / "model.zip").read_bytes() == before


def test_off_policy_checkpoints_carry_the_replay_buffer(tmp_path):
    sac = PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), algo="sac", steps=128, eval_every=128, eval_episodes=1,
                         checkpoint_every=64, overrides=SAC_TINY, keep_evaluated=True)
    out = pretrain(sac, out=tmp_path / "sac")
    assert list((out / "checkpoints").glob("step_*_replay_buffer.npz"))
    # A policy kept to be evaluated needs no buffer: a buffer per evaluation would grow with the run twice over.
    assert list((out / "evaluated").glob("step_*.zip")) and not list((out / "evaluated").glob("*replay_buffer*"))
    (out / "model.zip").unlink()
    for f in (out / "checkpoints").glob("step_000000128*"):
        f.unlink()
    pretrain(sac, out=out, resume=True)
    from stable_baselines3 import SAC

    assert SAC.load(out / "model.zip").num_timesteps == 128


def test_resume_reads_weights_statistics_and_replay_buffer_without_unpickling(tmp_path, no_unpickling):
    from sim2real.learning.artifacts import restore_checkpoint

    sac = PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), algo="sac", steps=128, eval_every=128, eval_episodes=1,
                         checkpoint_every=64, overrides=SAC_TINY)
    out = pretrain(sac, out=tmp_path / "sac")
    (out / "model.zip").unlink()
    with np.load(out / "checkpoints" / "step_000000064_replay_buffer.npz") as z:
        saved_obs, saved_pos = z["observations"].copy(), int(z["pos"])
    for f in (out / "checkpoints").glob("step_000000128*"):
        f.unlink()
    seen = {}
    real_restore = restore_checkpoint

    def spy(model, zip_path):
        step = real_restore(model, zip_path)
        seen["pos"], seen["obs"] = model.replay_buffer.pos, model.replay_buffer.observations[:saved_pos].copy()
        return step

    import sim2real.learning.pretrain as pretrain_module

    pretrain_module.restore_checkpoint, old = spy, pretrain_module.restore_checkpoint
    try:
        pretrain(sac, out=out, resume=True)  # the no_unpickling fixture fails on any unpickling
    finally:
        pretrain_module.restore_checkpoint = old
    assert seen["pos"] == saved_pos == 64
    np.testing.assert_array_equal(seen["obs"], saved_obs)


def test_a_checkpoint_cut_short_by_a_kill_is_never_resumed_from(tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    pretrain(cfg(), out=out)
    (out / "model.zip").unlink()
    ckpt = out / "checkpoints"
    # A kill while step 256 was being written: its model zip is in place, its statistics are not,
    # its manifest never landed, and a temp file is left over.
    shutil.copy(ckpt / "step_000000128.zip", ckpt / "step_000000256.zip")
    (ckpt / ".step_000000256_vecnormalize.tmp.pkl").write_bytes(b"")
    pretrain(cfg(), out=out, resume=True)
    said = capsys.readouterr().out
    assert "removed an incomplete checkpoint" in said and "resuming" in said and "step_000000128.zip" in said
    assert not list(ckpt.glob(".*tmp*"))
    assert PPO.load(out / "model.zip").num_timesteps == 256


def test_ppo_checkpoints_fall_between_updates(tmp_path):
    out = pretrain(cfg(), out=tmp_path / "run")
    manifest = json.loads((out / "checkpoints" / "step_000000128.manifest.json").read_text())
    assert manifest["num_timesteps"] == 128  # a rollout boundary (2 envs x 64 steps)
    model = PPO.load(out / "checkpoints" / "step_000000128.zip")
    assert model._n_updates == 2  # the first rollout's update (n_epochs=2) is inside the checkpoint


def test_tensorboard_scalars_land_where_sb3_puts_them(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = pretrain(PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=512, eval_every=96, eval_episodes=1,
                                  checkpoint_every=512, overrides=TINY), out=tmp_path / "run")
    events = EventAccumulator(str(out / "tb" / "pretrain_1")).Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    # train/* are dumped with SB3's rollout logs (at rollout ends, 2 envs x 64 steps), never at an evaluation's step.
    assert set(steps["train/approx_kl"]) <= set(steps["time/fps"])
    assert all(s % 128 == 0 for s in steps["train/approx_kl"])
    assert steps["eval/mean_reward"] == steps["eval/sim/mean_return"]  # SB3's tag beside the per-world ones
    assert "eval/mean_ep_length" in steps
    # The run's settings as hparams, to filter and compare pretraining runs in TensorBoard's HPARAMS tab.
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["algo"].string_value == "ppo" and session.hparams["n_envs"].number_value == 2
    assert session.hparams["stepper"].string_value == "batch" and session.hparams["batch_size"].number_value == 32


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_kill_9_during_pretraining_then_resume_reaches_the_same_total(algo, tmp_path):
    """kill -9 of pretraining at 4 random moments, `--resume` after each: the run ends at its planned total,
    its curve has each step once, no temp file is left, and nothing was unpickled on the way (weights only)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    overrides = TINY if algo == "ppo" else {"learning_starts": 64, "batch_size": 32,
                                            "policy_kwargs": {"net_arch": [16, 16]}}
    steps = 6000 if algo == "ppo" else 2000
    code = (f"from sim2real.learning.pretrain import PretrainConfig, pretrain\n"
            f"import sys\n"
            f"pretrain(PretrainConfig(task={str(DATA / 'pendulum_norm.yaml')!r}, algo={algo!r}, steps={steps}, "
            f"eval_every=500, eval_episodes=1, checkpoint_every=256, overrides={overrides!r}), out={str(out)!r}, "
            f"resume=sys.argv[1] == '1')\n")
    root = Path(__file__).resolve().parents[1]
    rng = np.random.default_rng(1)
    kills = 0
    for delay in rng.uniform(1.0, 4.0, size=4):
        if (out / "model.manifest.json").exists():
            break  # the last kill landed after the final model was written: the run is finished
        proc = subprocess.Popen([sys.executable, "-c", code, "1" if (out / "run.json").exists() else "0"], cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (out / "evaluations.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the kill lands once training has started (imports take seconds)
        time.sleep(delay)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    if not (out / "model.manifest.json").exists():
        proc = subprocess.run([sys.executable, "-c", code, "1"], cwd=root, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    assert kills >= 2
    manifest = json.loads((out / "model.manifest.json").read_text())
    assert manifest["num_timesteps"] >= steps
    rows = [int(r.split(",")[0]) for r in (out / "evaluations.csv").read_text().split()[1:]]
    assert rows == sorted(set(rows)), rows
    assert not list(out.rglob(".*tmp*"))


def test_resume_before_the_first_checkpoint_starts_again_in_place(tmp_path):
    out = pretrain(cfg(), out=tmp_path / "run")
    # What a kill before the first checkpoint leaves: run.json and a curve, no checkpoint, no model.
    import shutil

    shutil.rmtree(out / "checkpoints")
    for f in out.glob("model*"):
        f.unlink()
    pretrain(cfg(), out=out, resume=True)
    steps = [int(r.split(",")[0]) for r in (out / "evaluations.csv").read_text().split()[1:]]
    assert steps == sorted(set(steps)) and steps[0] == 0
    assert (out / "evaluations.superseded.csv").exists()
    assert len(json.loads((out / "run.json").read_text())["resumed"]) == 1
    assert PPO.load(out / "model.zip").num_timesteps == 256


def test_resume_after_a_kill_while_writing_the_final_model(tmp_path):
    out = pretrain(cfg(), out=tmp_path / "run")
    # What a kill between model.zip and its manifest leaves: a model.zip that is not a finished run.
    (out / "model.manifest.json").unlink()
    with pytest.raises(FileExistsError, match="without its manifest.*use --resume"):
        pretrain(cfg(), out=out)  # without --resume it is still refused, never overwritten
    pretrain(cfg(), out=out, resume=True)
    assert json.loads((out / "model.manifest.json").read_text())["num_timesteps"] == 256
    with pytest.raises(FileExistsError, match="is finished"):
        pretrain(cfg(), out=out, resume=True)


def test_resume_never_deletes_a_model_it_cannot_retrain_from_a_checkpoint(tmp_path):
    import shutil

    # A zoo entry, or a run from before manifests: model.zip and run.json, no manifest, no checkpoint.
    out = pretrain(cfg(), out=tmp_path / "run")
    (out / "model.manifest.json").unlink()
    shutil.rmtree(out / "checkpoints")
    before = (out / "model.zip").read_bytes()
    with pytest.raises(FileExistsError, match="is finished"):
        pretrain(cfg(), out=out, resume=True)
    assert (out / "model.zip").read_bytes() == before


def test_default_run_folders_of_a_spec_path_stay_under_runs():
    from sim2real.learning.pretrain import default_pretrain_dir
    from sim2real.transfer.run import TransferConfig, default_transfer_dir

    spec = str(DATA / "pendulum_norm.yaml")  # absolute: joined as is, it used to put the run beside the spec
    assert default_pretrain_dir(PretrainConfig(task=spec), "ppo") == Path("runs/pretrain/pendulum_norm-dr-ppo-s0")
    assert default_transfer_dir(spec, TransferConfig(policy="p", target="heavy")) == \
        Path("runs/transfer/pendulum_norm/heavy/finetune/s0")
