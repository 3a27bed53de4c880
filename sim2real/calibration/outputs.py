"""What a calibration leaves behind: ``calibration.json``, ``calibrated.yaml`` and a report with figures.

``calibrated.yaml`` is the task's spec with two changes: a target world ``calibrated`` holding the fitted
values, and a randomisation block centred on the fit (the fitted fields drawn from ``fit ± width``, the
width the 95% interval or ``MIN_WIDTH`` of the value, whichever is wider: intervals from a model that is
never exact are narrower than the truth's distance, as the report shows). Every other field is the task's.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sim2real.calibration.fit import CalibrationProblem, CalibrationResult  # noqa: E402
from sim2real.learning.artifacts import atomic_write_text  # noqa: E402
from sim2real.pages import md_table, write_report  # noqa: E402
from sim2real.spec import TaskSpec, load_spec_file, read_yaml_mapping  # noqa: E402

MIN_WIDTH = 0.1  # the calibrated randomisation spans at least +-10% of each fitted value
CALIBRATED_WORLD = "calibrated"


def truth_of(spec: TaskSpec, world: str, labels: list[str]) -> dict[str, float]:
    """The known values of a spec target world for the fitted labels (a stand-in target: the report can say
    how close the fit came). ``delay`` is the world's action delay. Labels the world does not shift are 1.0."""
    if world not in spec.targets:
        return {}
    w = spec.targets[world]
    truth = {label: 1.0 for label in labels}
    for shift in w.physics:
        if shift.op != "scale":
            continue
        names = shift.names
        for label in labels:
            field, _, name = label.partition("/")
            if field == shift.field and (names == "all" and name == "all" or isinstance(names, list)
                                         and len(names) == 1 and names[0] == name):
                truth[label] = float(shift.value)
    effects = w.effects
    if "motor/saturation" in labels:
        truth["motor/saturation"] = float(effects.motor.saturation) if effects and effects.motor else 1.0
    truth["delay"] = float(effects.action_delay) if effects else 0.0
    return truth


def calibrated_spec(spec: TaskSpec, result: CalibrationResult) -> dict:
    """The task's spec as a mapping, with the ``calibrated`` world and randomisation centred on the fit."""
    raw = read_yaml_mapping(spec.path)  # a fresh mapping: edited in place below
    raw.setdefault("name", spec.name)
    if isinstance(raw.get("env_kwargs"), dict) and "xml_file" in raw["env_kwargs"]:
        raw["env_kwargs"]["xml_file"] = spec.env_kwargs["xml_file"]  # absolute: the new file lives elsewhere
    physics, ranges, effects = [], [], {"action_delay": result.delay}
    for label in result.labels:
        value, half = result.values[label], result.intervals[label]
        width = max(half if np.isfinite(half) else 0.0, MIN_WIDTH * abs(value))
        if label == "motor/saturation":
            effects["motor"] = {"saturation": round(value, 4)}
            continue
        if label.startswith("obs_bias/"):
            continue
        field, _, name = label.partition("/")
        names = "all" if name == "all" else [name]
        physics.append({"field": field, "names": names, "op": "scale", "value": round(value, 4)})
        ranges.append({"field": field, "names": names, "op": "scale", "shared": name == "all",
                       "low": round(max(value - width, 1e-3), 4), "high": round(value + width, 4)})
    calibrated = {"description": f"fitted to {result.steps} recorded steps by sim2real calibrate",
                  "physics": physics, "effects": effects}
    rand = raw.setdefault("randomization", {})
    # The spec's nominal episodes would be the uncalibrated model (the fit lives in the ranges, not the model).
    rand.pop("sampling", None)
    if result.world in spec.targets:  # the calibrated sim trains for the reward the data were recorded under
        variant = spec.targets[result.world].task_variant
        if variant is not None:
            calibrated["task_variant"] = rand["task_variant"] = variant
        else:
            rand.pop("task_variant", None)
    raw.setdefault("targets", {})[CALIBRATED_WORLD] = calibrated
    # The fitted entries come last: where an element is also in a wider entry, the later write wins.
    rand["params"] = list(rand.get("params", [])) + ranges
    eff = dict(rand.get("effects") or {})
    eff["action_delay"] = result.delay  # measured, not guessed: no longer drawn
    if "motor/saturation" in result.values:
        s, h = result.values["motor/saturation"], result.intervals["motor/saturation"]
        w = max(h if np.isfinite(h) else 0.0, 0.05)
        motor = dict(eff.get("motor") or {})
        motor["saturation"] = [round(max(s - w, 0.05), 4), round(min(s + w, 1.0), 4)]
        eff["motor"] = motor
    rand["effects"] = eff
    return raw


def plot_trajectory(problem: CalibrationProblem, result: CalibrationResult, out: Path, windows: int = 6) -> Path:
    """Predicted (nominal and calibrated) vs recorded observations over the first windows, a few dimensions."""
    x_fit = np.array([result.values[lab] for lab in result.labels])
    x_nom = problem.nominal_vector()
    fitted = problem.predict(x_fit, result.delay)[0][:windows]
    nominal = problem.predict(x_nom, 0)[0][:windows]
    recorded = problem.targets[:windows]
    dims = list(range(min(4, problem.obs_dim)))
    fig, axes = plt.subplots(len(dims), 1, figsize=(9, 2.0 * len(dims)), sharex=True)
    axes = np.atleast_1d(axes)
    w = problem.window
    for ax, d in zip(axes, dims):
        for i in range(len(recorded)):
            t = np.arange(i * w + 1, (i + 1) * w + 1)
            ax.plot(t, recorded[i, :, d], "k.", ms=3, label="recorded" if i == 0 else None)
            ax.plot(t, nominal[i, :, d], color="tab:red", lw=1, label="nominal sim" if i == 0 else None)
            ax.plot(t, fitted[i, :, d], color="tab:blue", lw=1.5, label="calibrated sim" if i == 0 else None)
            ax.axvline(i * w + 0.5, color="#ddd", lw=0.8)
        ax.set_ylabel(f"obs[{d}]")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("control step (each window starts from the recorded observation)")
    fig.suptitle("multiple shooting: predicted vs recorded")
    fig.tight_layout()
    path = out / "trajectory.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _fitted_rows(offsets: list[list[float]]) -> np.ndarray:
    """The offsets of the episodes that had a window to fit (the others are all zero)."""
    rows = np.asarray(offsets, dtype=float)
    return rows[np.any(rows != 0.0, axis=1)] if len(rows) else rows


def write_calibration(out: Path, spec: TaskSpec, problem: CalibrationProblem, result: CalibrationResult,
                      source: str) -> Path:
    """Write ``calibration.json``, ``calibrated.yaml`` (validated by loading it) and the report into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# calibrated by `sim2real calibrate` from {source}: {result.steps} steps, delay {result.delay}, "
              f"residual RMS {result.rms_before:.3g} -> {result.rms_after:.3g}\n")
    atomic_write_text(out / "calibrated.yaml", header + yaml.safe_dump(calibrated_spec(spec, result), sort_keys=False))
    load_spec_file(out / "calibrated.yaml")  # a calibrated spec that does not load is a bug: fail here, not later
    image = plot_trajectory(problem, result, out)
    rows = [["parameter", "prior", "fitted", "95% interval", "truth", "error", "interval covers truth"]]
    for lab in result.labels:
        v, h = result.values[lab], result.intervals[lab]
        t = result.truth.get(lab)
        prior = problem.start_vector()[result.labels.index(lab)]
        rows.append([f"`{lab}`", f"{prior:.3g}", f"{v:.4g}", f"±{h:.3g}",
                     "-" if t is None else f"{t:.4g}", "-" if t is None else f"{(v - t) / t:+.1%}",
                     "-" if t is None else ("yes" if abs(v - t) <= h else "no")])
    truth_delay = result.truth.get("delay")
    delays = md_table([["action delay (steps)", "mean squared residual"]] +
                      [[f"**{d}**" if d == result.delay else str(d), f"{c:.4g}"] for d, c in result.delay_costs.items()])

    def document(img) -> str:
        return "\n".join([
            f"# Calibration: {spec.name}", "",
            f"From {source}: {result.steps} recorded steps in {result.n_windows} windows of {result.window} control "
            f"steps (multiple shooting: each window starts from the recorded observation and replays the recorded "
            f"commands). Fitted with `mujoco.sysid` in {result.seconds:.0f} s.", "",
            "## Fitted vs prior", "", md_table(rows), "",
            f"Action delay: **{result.delay}** steps" + ("" if truth_delay is None else
                                                          f" (truth {int(truth_delay)})") + ".", "", delays, "",
            "Intervals are the 95% half-widths from the Jacobian at the optimum (`mujoco.sysid.calculate_intervals`); "
            "they assume the model can explain the data up to white noise, which sensor noise in the start states "
            "breaks, so they are narrower than the real uncertainty. The calibrated randomisation therefore spans at "
            f"least ±{MIN_WIDTH:.0%} of each value.", "",
            *([] if not result.offsets else [
                "Each episode's offset of the position sensors was fitted with the physics held at the current fit, "
                "removed from the data, and the physics fitted again (twice); the residuals below are both of the "
                "data without them (the delay table above is of the data as recorded). Spread of the offsets over "
                "the episodes long enough to fit (std per position entry): "
                + ", ".join(f"{v:.3g}" for v in _fitted_rows(result.offsets).std(axis=0)) + ".", ""]),
            "## Residuals", "",
            md_table([["model", "RMS of scaled residuals"], ["nominal sim, no delay", f"{result.rms_before:.4g}"],
                      ["calibrated", f"{result.rms_after:.4g}"]]), "",
            img(image), "",
            "## Use it", "",
            "`calibrated.yaml` is the task's spec with a `calibrated` target world and randomisation centred on the "
            "fit: `sim2real pretrain calibrated.yaml --init-from POLICY` continues a policy in the calibrated sim, "
            "`sim2real evaluate POLICY --target calibrated --task calibrated.yaml` measures one there.", ""])

    report = write_report(out, document, f"calibration: {spec.name}", atomic_write_text)
    # Last: its presence says the calibration is complete (a resumed calibrate strategy skips the fit).
    atomic_write_text(out / "calibration.json", json.dumps({**result.to_json(), "source": source}, indent=2))
    return report
