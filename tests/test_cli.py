"""The ``i2v`` command line itself: ``-h`` and argument errors answer without importing torch, and the
errors a user can fix end in ``error: ...`` and an exit code, not a traceback."""

import subprocess
import sys

import pytest

import i2v_helpers.training
from i2v_helpers.cli import main
from i2v_helpers.errors import TrainingDiverged

HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate")

# run in a fresh interpreter: this one has torch loaded already (tests/conftest.py)
IMPORTED_BY_HELP = f"""
import sys
from i2v_helpers.cli import build_parser
parser = build_parser()
for argv in (["--help"], ["train", "-h"], ["train", "tiny-stage1", "--bogus"]):
    try:
        parser.parse_args(argv)
    except SystemExit:
        pass
print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY}))
"""


def test_help_and_argument_errors_import_no_torch():
    res = subprocess.run([sys.executable, "-c", IMPORTED_BY_HELP], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.splitlines()[-1] == "[]"


def test_help_and_a_bad_argument_from_the_command_line():
    help_ = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "--help"], capture_output=True, text=True)
    assert help_.returncode == 0
    for cmd in ("env", "data", "sample", "train", "eval", "bench", "estimate", "demo", "pretrain"):
        assert cmd in help_.stdout
    bad = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "train", "tiny-stage1", "--bogus"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


def test_a_bad_config_value_exits_2_naming_the_key():
    res = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "train", "tiny-stage1", "--set", "cache=dsk"],
                         capture_output=True, text=True)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.startswith("error: cache must be one of memory, disk, off, got 'dsk'")
    assert "Traceback" not in res.stderr


@pytest.fixture
def no_training(monkeypatch):
    """``train`` replaced by a failure: a config error must stop ``i2v train`` before any model loads."""
    def train(cfg, resume=False):
        raise AssertionError("train() was called")
    monkeypatch.setattr(i2v_helpers.training, "train", train)


@pytest.mark.parametrize("key, typo, allowed", [
    ("sampling", "spred", "consecutive, spread"),
    ("cache", "dsk", "memory, disk, off"),
    ("lora_blocks", "temporl", "all, spatial, temporal"),
])
def test_cli_refuses_a_typo_before_the_model_loads(no_training, capsys, key, typo, allowed):
    assert main(["train", "tiny-stage1", "--set", f"{key}={typo}"]) == 2
    assert capsys.readouterr().err == f"error: {key} must be one of {allowed}, got {typo!r}\n"


def test_cli_config_errors_and_a_diverged_run_exit_codes(no_training, monkeypatch, capsys):
    assert main(["train", "no-such-config"]) == 2
    assert "no such config file or shipped config" in capsys.readouterr().err
    assert main(["estimate", "svd-xt-lora", "--set", "learning_rat=1"]) == 2
    assert "unknown config keys ['learning_rat']" in capsys.readouterr().err

    def diverged(cfg, resume=False):
        raise TrainingDiverged("loss is nan in step 3: training stopped")
    monkeypatch.setattr(i2v_helpers.training, "train", diverged)
    assert main(["train", "tiny-stage1"]) == 3
    assert capsys.readouterr().err == "error: loss is nan in step 3: training stopped\n"
