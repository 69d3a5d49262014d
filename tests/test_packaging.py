"""The install story: pyproject, environment.yml and the README's quick start agree."""

import re
import subprocess
import sys

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from conftest import REPO  # tests/conftest.py


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    proj = _pyproject()["project"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    py = next(d for d in conda if d.startswith("python"))
    assert SpecifierSet(proj["requires-python"]).contains(py.split("=")[-1] + ".0")
    # the package itself, with the course and dev extras
    editable = [x for x in pip if x.startswith("-e")]
    assert len(editable) == 1
    extras = re.search(r"\[(.*)\]", editable[0]).group(1).split(",")
    assert set(extras) == {"course", "dev"} <= set(proj["optional-dependencies"])
    # every other pinned package satisfies pyproject's own range for it
    ranges = {Requirement(r).name: Requirement(r).specifier for r in proj["dependencies"]}
    for line in pip:
        if line.startswith("-"):
            continue
        req = Requirement(line)
        assert req.name in ranges, f"{req.name} in environment.yml but not in pyproject.toml"
        pinned = next(iter(req.specifier)).version
        assert ranges[req.name].contains(pinned), f"{line} outside pyproject's {ranges[req.name]}"


def test_run_sh_pins_the_same_torch_as_environment_yml():
    env_torch = re.search(r"torch==[\d.]+", (REPO / "environment.yml").read_text()).group(0)
    assert f"TORCH_SPEC:-{env_torch}" in (REPO / "run.sh").read_text()


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    assert len(blocks) == 2 and all(len(b.strip().splitlines()) == 1 for b in blocks)
    assert blocks[1].strip() == "bash run.sh test"
    assert "bash run.sh test" in (REPO / ".ci" / "run").read_text()


def test_console_script_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "-h"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("env", "data", "sample", "demo"):
        assert cmd in out.stdout


def test_i2v_env_reports_versions_and_device():
    out = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "env", "--json"], capture_output=True, text=True)
    assert out.returncode == 0
    import json

    rep = json.loads(out.stdout)
    for key in ("torch", "diffusers", "peft", "transformers", "accelerate", "device", "backend"):
        assert rep[key] and rep[key] != "not installed"
