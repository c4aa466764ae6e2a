"""CPU threads: --threads sets torch's count for the audit only; the command makes OpenMP
wait passively unless the user's environment says otherwise."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import auditkit
from auditkit.threads import torch_threads

ARGS = ["run", "--model", "auditkit.testing.models:tiny_factory", "--data", "synthetic:shapes?n=8&size=32",
        "--baselines", "none", "--checks", "accuracy.clean", "-q"]


def test_torch_threads_sets_the_count_for_the_block_and_restores_it():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_the_python_api_records_and_restores_threads(tiny_model, tiny_data):
    before = torch.get_num_threads()
    run = auditkit.audit(tiny_model, tiny_data, checks=["accuracy.clean"], threads=1)
    assert run.report["config"]["threads"] == 1 and run.report["environment"]["threads"] == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_the_command_waits_passively_unless_the_environment_says_otherwise(tmp_path, given):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, "-m", "auditkit", *ARGS, "--threads", "1", "--json", str(out)],
                   cwd=tmp_path, env=env, capture_output=True)  # exit 0 or 1: the untrained model may fail
    environment = json.loads(out.read_text())["environment"]
    assert environment["omp_wait_policy"] == (given or "PASSIVE")
    assert environment["threads"] == 1


def test_threads_below_one_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "auditkit", *ARGS, "--threads", "0"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 4
    assert "--threads" in proc.stderr and "Traceback" not in proc.stderr
