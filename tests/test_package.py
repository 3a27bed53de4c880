"""The package's shape: layers that import downwards only, a light `import sim2real`, specs inside the wheel."""

from __future__ import annotations

import ast
import subprocess
import sys
import venv
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "sim2real"
# Each layer may import itself and the layers after it in this list, never one before it.
LAYERS = ["top", "transfer", "calibration", "robot", "learning", "worlds", "base"]
BASE = {"spec", "progress", "fields", "options", "pages", "files"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "sim2real" or len(parts) == 1:
        return "top"
    if parts[1] in ("transfer", "calibration", "robot", "learning", "worlds"):
        return parts[1]
    return "base" if parts[1] in BASE else "top"


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every sim2real module the file imports, at any depth (function-local imports count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sim2real"):
            out.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("sim2real")]
    return out


def test_layers_import_downwards_only():
    violations = []
    for path in PKG.rglob("*.py"):
        module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        if module == "sim2real":
            continue  # the package's front door names the API lazily
        mine = LAYERS.index(layer_of(module))
        for imported, line in imports_of(path):
            if imported == "sim2real":
                continue
            if LAYERS.index(layer_of(imported)) < mine:
                violations.append(f"{path.relative_to(PKG.parent)}:{line} ({layer_of(module)}) imports "
                                  f"{imported} ({layer_of(imported)})")
    assert not violations, "imports that point upwards:\n" + "\n".join(violations)


def test_import_sim2real_loads_no_torch_and_no_function_shadows_a_subpackage():
    code = ("import sys, sim2real, sim2real.transfer as t; "
            "print('torch' in sys.modules, 'stable_baselines3' in sys.modules, type(t).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "module"]


@pytest.mark.slow
def test_a_built_wheel_ships_every_task(tmp_path):
    root = PKG.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(root)], check=True)
    wheel = next((tmp_path / "dist").glob("sim2real-*.whl"))
    # A fresh venv that borrows the installed dependencies but not this checkout's sim2real.
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=True)
    py = tmp_path / "venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    code = ("import sim2real, gymnasium as gym; from sim2real.spec import available_tasks; "
            "print(sim2real.__file__); print(','.join(available_tasks())); "
            "print(sum(1 for i in gym.registry if i.startswith('sim2real/')))")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    location, tasks, ids = out.split()
    assert str(tmp_path / "venv") in location  # the wheel's copy, not the checkout's
    assert tasks.split(",") == ["half_cheetah", "hopper", "inverted_pendulum", "walker2d"]
    assert int(ids) >= 20
