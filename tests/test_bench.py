"""`sim2real bench` with tiny budgets: it runs every contender and writes its JSON and table (no timing asserted)."""

import json

import pytest

from sim2real import bench
from sim2real.cli import main


def test_steps_bench_measures_every_contender_and_writes_a_table(tmp_path):
    result = bench.bench_steps(["inverted_pendulum"], n=2, repeats=2, steps=64)
    names = [r["contender"] for r in result["results"]]
    assert len(names) == 7 and any(n.startswith("batched x2") for n in names)
    for r in result["results"]:
        assert len(r["runs"]) == 2 and r["min"] <= r["median"] <= r["max"] and r["median"] > 0
    # The physics-only clock counts part of the plain env's time: the same steps, a higher rate.
    rate = {r["contender"]: r["median"] for r in result["results"]}
    assert rate["physics only (plain env's mj_step)"] > rate["gymnasium env (plain)"]
    md = bench.write(result, tmp_path)
    text = md.read_text()
    assert "mujoco" in text and "| inverted_pendulum | batched x2, 1 thread" in text
    assert json.loads((tmp_path / "bench_steps.json").read_text())["versions"]["mujoco"]


@pytest.mark.slow  # three short training runs in subprocesses
def test_learn_bench_races_sim2real_sb3_and_the_zoo(tmp_path, capsys):
    code = main(["bench", "learn", "--tasks", "hopper", "--steps", "512", "--eval-every", "256", "--eval-episodes", "1",
                 "--n", "4", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "bench_learn_hopper_ppo.json").read_text())
    assert [r["contender"] for r in result["results"]] == ["sim2real", "sb3", "zoo"]
    for r in result["results"]:
        assert r["final_step"] >= 512 and [row["step"] for row in r["curve"]][:2] == [256, 512]
        assert r["train_s"] > 0
    assert "Hopper-v4" in result["zoo_hyperparams"]
    assert "| sim2real |" in (tmp_path / "bench_learn_hopper_ppo.md").read_text()
    assert result["n"] == 4 and result["results"][0]["curve"][0]["n_envs"] == 4
    # A race stopped early is summarised from its logs without running anything, with the envs they logged
    # (not the spec's n_envs, the default of --n).
    (tmp_path / "bench_learn_hopper_ppo.md").unlink()
    assert main(["bench", "learn", "--summarise", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "bench_learn_hopper_ppo.md").exists()
    assert json.loads((tmp_path / "bench_learn_hopper_ppo.json").read_text())["n"] == 4


def test_learn_bench_summarises_several_seeds_together(tmp_path, capsys):
    """--seeds: one race per seed in its own folder; the table gives each seed's values and the medians."""
    def log(seed, contender, returns):  # evaluations every 1,000 steps, 30 CPU-seconds apart
        folder = tmp_path / f"seed_{seed}"
        folder.mkdir(exist_ok=True)
        rows = [{"contender": contender, "step": 1000 * (i + 1), "train_s": 40.0 * (i + 1), "cpu_s": 30.0 * (i + 1),
                 "return": r} for i, r in enumerate(returns)]
        (folder / f"learn_hopper_ppo_{contender}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    log(0, "sim2real", [100, 3100, 3200])   # reached at the 2nd evaluation, 60 CPU-s
    log(1, "sim2real", [3050, 2900, 2000])  # at the 1st, 30 CPU-s
    log(0, "sb3", [100, 200, 3300])         # at the 3rd, 90 CPU-s
    log(1, "sb3", [100, 200, 300])          # never
    assert main(["bench", "learn", "--summarise", "--seeds", "0", "1", "--contenders", "sim2real", "sb3",
                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_learn_hopper_ppo_seeds.json").read_text())
    ours, sb3 = result["results"]
    assert ours["reached"] == 2 and ours["median_cpu_to_threshold_s"] == 45.0
    assert ours["final_return"] == [3200, 2000] and ours["last10_mean"] == [pytest.approx(6400 / 3), pytest.approx(7950 / 3)]
    assert sb3["reached"] == 1 and sb3["median_cpu_to_threshold_s"] is None  # one seed of two: no median
    assert sb3["cpu_to_threshold_s"] == [90.0, None]
    assert result["eval_every"] == 1000  # read from the logs, not the command line's default
    assert result["steps"] == 1_000_000 and result["per_seed"][0]["steps"] == 1_000_000  # the plan, not the log's steps
    md = (tmp_path / "bench_learn_hopper_ppo_seeds.md").read_text()
    assert "| sim2real | 2 of 2 | 1.0 min / 0.5 min | 0.8 min |" in md
    assert "| sb3 | 1 of 2 | 1.5 min / - | not reached |" in md
    assert main(["bench", "learn", "--summarise", "--seeds", "0", "0", "--out", str(tmp_path)]) == 2
    assert "each seed once" in capsys.readouterr().err


def test_zoo_hyperparameters_have_a_built_in_copy_for_hopper_and_walker2d(monkeypatch):
    """Without rl_zoo3 installed the race uses the copies; a task with none is a clear error."""
    import sys

    from sim2real.bench import _zoo_hyperparams

    monkeypatch.setitem(sys.modules, "rl_zoo3", None)  # import rl_zoo3 -> ImportError
    walker, source = _zoo_hyperparams("walker2d")
    assert walker["n_steps"] == 512 and walker["n_epochs"] == 20 and "Walker2d-v4" in source
    assert _zoo_hyperparams("half_cheetah", "sac")[0] == {"learning_starts": 10000}
    assert _zoo_hyperparams("half_cheetah", "ppo")[0]["learning_rate"] == 2.0633e-05
    with pytest.raises(ValueError, match="inverted_pendulum"):
        _zoo_hyperparams("inverted_pendulum", "ppo")
