"""Audits sharded across processes (auditkit.distributed): the batches each process takes, the
seeds each batch draws from, torchrun's environment read and checked, and the whole audit
started the way torchrun starts it (2 gloo processes on the CPU) giving the one-process
report: checks that shard (the Grad-CAM checks, cam.consistency, occlusion.localization and the
white-box attacks) merge to the same metrics; accuracy.clean runs once on rank 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from auditkit import UsageError
from auditkit.distributed import (
    SINGLE,
    World,
    batch_seed,
    device_for_rank,
    other_rank,
    owned_indices,
    world_from_environment,
)


def test_batches_are_shared_out_whole_and_cover_every_image_once():
    for size, limit, batch in [(2, 40, 8), (3, 41, 8), (2, 8, 8), (4, 5, 2)]:
        parts = [owned_indices(World(rank=r, size=size), limit, batch) for r in range(size)]
        assert sorted(i for p in parts for i in p) == list(range(limit))
        for rank, part in enumerate(parts):
            numbers = sorted({i // batch for i in part})
            assert numbers == list(range(rank, -(-limit // batch), size))  # batch b on rank b % size
            assert World(rank=rank, size=size).n_batches(-(-limit // batch)) == len(numbers)
    assert owned_indices(SINGLE, 10, 4) == list(range(10))


def test_each_batch_has_its_own_seed_the_same_on_every_process():
    assert batch_seed(7, 3) == batch_seed(7, 3)
    assert len({batch_seed(7, b) for b in range(-1, 50)}) == 51
    assert batch_seed(7, 3) != batch_seed(8, 3)


def test_one_process_helpers_are_the_identity():
    index, rows = torch.tensor([3, 1]), {"x": torch.tensor([0.5, 0.25])}
    assert SINGLE.gather_rows(index, rows) == (index, rows)
    assert SINGLE.all_sum(3) == 3 and SINGLE.all_gather("a") == ["a"] and SINGLE.broadcast({"k": 1}) == {"k": 1}
    assert not SINGLE.distributed and SINGLE.is_main


def test_torchrun_environment_is_read_and_checked():
    cpu = torch.device("cpu")
    assert world_from_environment(cpu, {}) is SINGLE
    assert world_from_environment(cpu, {"WORLD_SIZE": "1", "RANK": "0"}) is SINGLE
    with pytest.raises(UsageError, match="MASTER_ADDR, MASTER_PORT are not set; start the audit with torchrun"):
        world_from_environment(cpu, {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    env = {"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    with pytest.raises(UsageError, match="must be integers"):
        world_from_environment(cpu, env)
    with pytest.raises(UsageError, match=r"RANK=2 is outside 0..1"):
        world_from_environment(cpu, {**env, "RANK": "2"})
    assert device_for_rank(cpu, {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == cpu
    with pytest.raises(UsageError, match="AUDITKIT_DIST_TIMEOUT_S='soon': expected a number of seconds above 0"):
        world_from_environment(cpu, {**env, "RANK": "0", "AUDITKIT_DIST_TIMEOUT_S": "soon"})


def test_a_stray_rank_without_torchrun_is_an_error_said_not_a_silent_success(tmp_path, monkeypatch, capsys):
    """A process of a torchrun job other than rank 0 stays quiet and exits 0 (rank 0 says the
    verdict); RANK=1 left in an environment without the rest of torchrun's variables makes no
    such process: it prints the one-line error and exits 4."""
    from auditkit.cli import main

    job = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    assert other_rank(job)
    assert not other_rank({**job, "RANK": "0"}) and not other_rank({})
    assert not other_rank({"WORLD_SIZE": "2", "RANK": "1"})
    monkeypatch.chdir(tmp_path)
    for key in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code = main(["run", "--model", "auditkit.testing.models:tiny_factory", "--data", "synthetic:shapes?n=8&size=32",
                 "--baselines", "none", "--checks", "accuracy.clean", "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 4
    assert "auditkit: error: WORLD_SIZE=2 says this is one of several processes, but LOCAL_RANK, MASTER_ADDR, " \
           "MASTER_PORT are not set" in err


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The tiny model after 100 steps on the shapes' train split: right on some images and not
    one class for all, so that the attacks have images to attack."""
    from auditkit.data.synthetic import make_shapes
    from auditkit.testing.models import tiny_factory

    data = make_shapes(n=8, size=32, seed=0)
    torch.manual_seed(0)
    model = tiny_factory(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    images, labels = data.train.images, data.train.labels
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        idx = torch.randint(0, len(images), (32,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


# Short runs of the costly checks that keep what sharding must get right: random targets and
# starts per batch, the minimal-epsilon search, every transfer attack (MI-FGSM included).
LIGHT = """
[checks."whitebox.pgd"]
steps = 3
bisection_steps = 2
[checks."whitebox.masking"]
steps = 3
strong_steps_factor = 2
strong_restarts = 1
[checks."gradcam.faithfulness"]
steps = 8
[checks."occlusion.localization"]
window = 0.25
[checks."transfer.proxy"]
query_budget = 96
augment_rounds = 1
epochs_per_round = 2
l2_epsilons = []
"""


def _audit(tmp_path: Path, name: str, processes: int, n: int, weights: Path, checks: str, **environ: str) -> dict:
    """The JSON report of a CPU audit of the tiny model on n shapes in batches of 8, one process
    or ``processes`` started by torchrun (``--standalone``: a free port on this machine), with
    ``environ`` added to the environment."""
    out = tmp_path / f"{name}.json"
    args = [
        "-m", "auditkit", "run", "--model", "auditkit.testing.models:tiny_factory", "--weights", str(weights),
        "--data", f"synthetic:shapes?n={n}&size=32", "--baselines", "none", "--device", "cpu",
        "--checks", checks, "--batch-size", "8", "-q",
        "--json", str(out),
    ]
    if processes > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *args]
    (tmp_path / "auditkit.toml").write_text(LIGHT)
    # TMPDIR: torchrun keeps its logs in a temporary folder, here the test's own
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch"),
           "AUDITKIT_DIST_TIMEOUT_S": "120", "TMPDIR": str(tmp_path), **environ}
    done = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return json.loads(out.read_text())


EVERY = "accuracy.clean,gradcam.*,cam.consistency,occlusion.localization,whitebox.*,transfer.proxy"
# one check of each way of merging: gathered rows, per-batch sums, folded tallies, attacks
EMPTY_RANK = "gradcam.localization,gradcam.randomization,cam.consistency,whitebox.fgsm"


@pytest.mark.parametrize("n, checks", [(40, EVERY)], ids=["five_batches"])
def test_two_processes_give_the_one_process_report(tmp_path, n, checks, weights):
    """40 images: batches 0, 2, 4 on rank 0 and 1, 3 on rank 1 (8 images, where rank 1 has
    none: test_two_machines_share_rank_0s_baseline_and_give_the_one_process_report).

    The two processes keep their per-image records (clean scores, shared maps) in files
    (``AUDITKIT_RECORDS_IN_MEMORY=0``), the one process in memory: the same report either way."""
    one = _audit(tmp_path, "one", 1, n, weights, checks)
    two = _audit(tmp_path, "two", 2, n, weights, checks, AUDITKIT_RECORDS_IN_MEMORY="0")
    assert [r["check"] for r in one["results"]] == [r["check"] for r in two["results"]]
    for a, b in zip(one["results"], two["results"]):
        assert (a["outcome"], a["metrics"], a["message"]) == (b["outcome"], b["metrics"], b["message"]), a["check"]
        assert a.get("artifacts") == b.get("artifacts"), a["check"]  # images, curves, captions
    if n == 40:  # enough images for every check's verdict (8 are too few for some)
        measured = {r["check"]: r["outcome"] for r in two["results"]}
        assert {o for c, o in measured.items() if c != "whitebox.masking"} <= {"passed", "failed"}, measured
        masking = next(r for r in two["results"] if r["check"] == "whitebox.masking")
        assert masking["metrics"]["n_correct"] >= 2  # probed (its verdict may still want more evidence)
        pgd = next(r for r in two["results"] if r["check"] == "whitebox.pgd")
        assert pgd["metrics"]["n_attacked"] >= 2 and pgd["metrics"]["median_min_eps"] > 0  # attacked and searched
    localization = next(r for r in two["results"] if r["check"] == "gradcam.localization")
    assert localization["metrics"]["n_images"] == n  # every process's images, merged
    assert two["summary"]["exit_code"] == one["summary"]["exit_code"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["one.json", "two.json"]  # rank 0 wrote it, once


FAILING_PLUGIN = '''
import auditkit
from auditkit import Check, Findings


class FailsOnRank1(Check):
    """Counts its images and merges the count, but raises on process ``rank``."""

    id = "test.fails_on_rank_1"
    rank = 1
    shards = True
    metrics = ("n_images",)

    def run(self, ctx):
        n = 0
        for batch in ctx.batches():
            if ctx.world.rank == self.rank:
                raise RuntimeError(f"simulated out of memory on process {ctx.world.rank}")
            n += len(batch)
        return Findings(metrics={"n_images": float(ctx.world.all_sum(n))})


class FailsOnRank0(FailsOnRank1):
    id = "test.fails_on_rank_0"
    rank = 0


@auditkit.hookimpl
def auditkit_collect_checks(config):
    return [FailsOnRank1, FailsOnRank0]
'''


def test_a_check_that_fails_on_one_process_is_an_error_and_the_audit_goes_on(tmp_path):
    """The other process waits at the check's merge: it learns that the check ended on the
    failing process, ends it too, and both go on to the next check, instead of waiting for
    each other until the timeout. Rank 0's result says what failed, wherever it failed."""
    (tmp_path / "failing_plugin.py").write_text(FAILING_PLUGIN)
    out = tmp_path / "report.json"
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "auditkit", "run", "--model", "auditkit.testing.models:tiny_factory",
        "--data", "synthetic:shapes?n=32&size=32", "--baselines", "none", "--device", "cpu", "--batch-size", "8",
        "-p", "failing_plugin", "--checks", "test.*,accuracy.clean", "-q", "--json", str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "AUDITKIT_DIST_TIMEOUT_S": "60", "TMPDIR": str(tmp_path)}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.exists(), done.stderr[-3000:]
    results = {r["check"]: r for r in json.loads(out.read_text())["results"]}
    assert results["test.fails_on_rank_1"]["outcome"] == results["test.fails_on_rank_0"]["outcome"] == "error"
    assert "process 1 failed: RuntimeError: simulated out of memory on process 1" in results["test.fails_on_rank_1"]["message"]
    assert "simulated out of memory on process 0" in results["test.fails_on_rank_0"]["message"]
    assert results["accuracy.clean"]["outcome"] in ("passed", "failed")  # the audit went on


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_machines_share_rank_0s_baseline_and_give_the_one_process_report(tmp_path, weights):
    """Two torchrun agents, as on two machines (static rendezvous, node ranks 0 and 1), each
    with its own weights cache and folder. Machine 0's cache holds the baseline's training;
    machine 1's holds another training under the same name (one that came out otherwise). Both
    must audit rank 0's baseline: machine 1 receives rank 0's file, and rank 0 alone writes
    the report, which is the one-process report. With 8 images in one batch, rank 1 has no
    batch: it still takes part in every merge."""
    common = [
        "-m", "auditkit", "run", "--model", "auditkit.testing.models:tiny_factory", "--weights", str(weights),
        "--data", "synthetic:shapes?n=8&size=32", "--baselines", "resnet18", "--baseline-steps", "2",
        "--device", "cpu", "--checks", f"accuracy.clean,{EMPTY_RANK}", "--batch-size", "8", "-q",
        "--json", "report.json",
    ]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch"), "AUDITKIT_DIST_TIMEOUT_S": "120"}
    caches = [tmp_path / f"machine{node}" / "cache" for node in (0, 1)]

    # one process: trains the baseline into machine 0's cache
    env = {**base, "AUDITKIT_CACHE_DIR": str(caches[0]), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, *common[:-1], str(tmp_path / "one.json")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    [trained] = (caches[0] / "baselines").glob("resnet18-*.pt")
    other = torch.load(trained, weights_only=True)
    other["state_dict"] = {k: v + 0.05 if v.is_floating_point() else v for k, v in other["state_dict"].items()}
    (caches[1] / "baselines").mkdir(parents=True)
    torch.save(other, caches[1] / "baselines" / trained.name)

    port = _free_port()
    machines = []
    for node in (0, 1):
        home = tmp_path / f"machine{node}"
        (home / "tmp").mkdir(parents=True)
        env = {**base, "AUDITKIT_CACHE_DIR": str(caches[node]), "TMPDIR": str(home / "tmp")}
        launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node}",
                  "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}", *common]
        machines.append(subprocess.Popen(launch, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True))
    outputs = [m.communicate(timeout=300) for m in machines]
    assert (tmp_path / "machine0" / "report.json").exists(), outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert not (tmp_path / "machine1" / "report.json").exists()  # rank 0 writes, on its machine
    assert machines[1].returncode == 0, outputs[1][1][-3000:]
    assert (caches[1] / "baselines" / trained.name).read_bytes() == trained.read_bytes()  # rank 0's, sent
    two = json.loads((tmp_path / "machine0" / "report.json").read_text())
    key = lambda r: (r["model"], r["check"], r["outcome"], r["metrics"], r["message"], r.get("artifacts"))  # noqa: E731
    assert [key(r) for r in one["results"]] == [key(r) for r in two["results"]]
    assert {r["model"] for r in two["results"]} == {"target", "resnet18"}
    localization = [r for r in two["results"] if r["check"] == "gradcam.localization"]
    assert [r["metrics"]["n_images"] for r in localization] == [8, 8]  # rank 0's batch, merged with none


def test_rank_0s_progress_bar_says_it_shows_its_share(monkeypatch):
    """Only rank 0 shows progress; over a sharded loop its bar counts rank 0's batches, and says so."""
    import types

    import auditkit.session as session_module

    shown = []
    monkeypatch.setattr(session_module, "progress_bar", lambda config: lambda it, total, desc: shown.append(desc) or it)
    fake = types.SimpleNamespace(world=World(rank=0, size=3), config=None)
    session_module.AuditSession.progress(fake, [], total=2, desc="target gradcam.localization", sharded=True)
    session_module.AuditSession.progress(fake, [], total=4, desc="target inversion.fidelity")
    fake.world = SINGLE
    session_module.AuditSession.progress(fake, [], total=4, desc="target gradcam.localization", sharded=True)
    assert shown == [
        "target gradcam.localization (rank 0's share, 1 of 3 processes)",
        "target inversion.fidelity",
        "target gradcam.localization",
    ]
