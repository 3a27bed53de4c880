"""Where in the ranges a policy loses its return: draws ranked against episode returns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim2real.cli import main
from sim2real.learning.failures import average_ranks, sensitivities, spearman
from sim2real.learning.selection import EPISODES_LOG


def evaluation(step, rng, n=30):
    mass = rng.uniform(0.75, 1.5, n)
    delay = rng.integers(0, 3, n).astype(float)
    noise = rng.uniform(0.0, 0.02, n)
    returns = 3000 - 2000 * (mass - 0.75) - 300 * delay  # heavy bodies lose most, latency some, noise nothing
    draws = [{"body_mass/torso": m, "effects/action_delay": d, "effects/obs_noise_std": z}
             for m, d, z in zip(mass, delay, noise)]
    return {"step": step, "returns": {"sim": returns.tolist(), "nominal": [3000.0]},
            "lengths": {}, "draws": {"sim": draws}}


def test_ties_share_their_mean_rank_and_a_constant_has_no_correlation():
    assert average_ranks(np.array([2.0, 0.0, 2.0, 1.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    assert spearman(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_the_parameter_that_costs_the_return_comes_first_with_falling_thirds():
    rows = sensitivities([evaluation(100, np.random.default_rng(0))])
    assert [r.param for r in rows][:2] == ["body_mass/torso", "effects/action_delay"]
    mass = rows[0]
    assert mass.rho < -0.8 and mass.thirds[0] > mass.thirds[1] > mass.thirds[2]
    assert 0.75 <= mass.low < mass.high <= 1.5
    assert abs(rows[-1].rho) < 0.4  # noise: unrelated


def test_worlds_without_draws_are_refused_by_name():
    with pytest.raises(ValueError, match="fewer than 3 episodes in 'nominal'"):
        sensitivities([evaluation(100, np.random.default_rng(0))], world="nominal")


def test_failures_pools_evaluations_up_to_a_step(tmp_path, capsys):
    rng = np.random.default_rng(1)
    (tmp_path / EPISODES_LOG).write_text("".join(json.dumps(evaluation(s, rng)) + "\n" for s in (100, 200, 300)))
    assert main(["failures", str(tmp_path), "--step", "200", "--last", "2"]) == 0
    out = capsys.readouterr().out
    assert "steps 100-200" in out and "60 episodes" in out and "body_mass/torso" in out
    assert "over 60 distinct worlds" in " ".join(out.split())
    assert main(["failures", str(tmp_path), "--step", "250"]) == 2
    assert "not an evaluated step" in capsys.readouterr().err
    assert main(["failures", str(tmp_path), "--last", "0"]) == 2
    assert "--last 0: must be at least 1" in capsys.readouterr().err
    assert main(["failures", str(tmp_path / "missing.json")]) == 2
    assert "sim2real evaluate POLICY --targets sim --json" in capsys.readouterr().err


def test_evaluations_that_drew_different_parameters_pool_on_the_ones_they_share():
    rng = np.random.default_rng(2)
    old, new = evaluation(100, rng), evaluation(200, rng)
    for d in old["draws"]["sim"]:
        del d["effects/obs_noise_std"]  # a spec change between them
    assert {r.param for r in sensitivities([old, new])} == {"body_mass/torso", "effects/action_delay"}


def test_a_policy_evaluated_in_the_randomised_sim_keeps_its_draws_for_failures(tiny_pretrained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(tiny_pretrained), "--targets", "sim", "nominal", "--episodes", "4",
                 "--json", str(out)]) == 0
    worlds = json.loads(out.read_text())["worlds"]
    assert len(worlds["sim"]["draws"]) == 4 and "body_mass/pole" in worlds["sim"]["draws"][0]
    assert worlds["nominal"]["draws"] is None  # a fixed world has nothing drawn
    capsys.readouterr()
    assert main(["failures", str(out)]) == 0
    assert "4 episodes in 'sim'" in capsys.readouterr().out
