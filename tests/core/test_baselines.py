"""Classic baselines: architectures adapted to the task, weights from a checkpoint, pretrained
weights, the cache or training for a step budget (on fresh generated images for synthetic
data), weak baselines, and relative thresholds against them."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import jsonschema
import pytest
import torch
import torchvision

import auditkit
from auditkit import Check, Findings, Outcome, Target, Threshold
from auditkit.baselines import (
    ALEXNET_MIN_SIZE,
    PRETRAINED,
    RECIPES,
    BaselineSpec,
    Budget,
    ResizeInput,
    build,
    load_baseline,
    needs_train_split,
    training,
    training_quality,
)
from auditkit.config import Config
from auditkit.data.base import AuditData, TensorSplit
from auditkit.data.loaders import load_data
from auditkit.data.synthetic import shapes_stream
from auditkit.errors import UsageError
from auditkit.main import load_baselines, run_audit
from auditkit.plugin_manager import get_plugin_manager
from auditkit.reporters.json_report import load_schema
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.plugins import CheckPlugin
from auditkit.weights import OfflineError, checkpoint_name

CPU = torch.device("cpu")
TINY = Budget(steps=2, max_seconds=1e6)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no pretrained weights unless a test puts them
    monkeypatch.delenv("AUDITKIT_OFFLINE", raising=False)

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tests never download ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch):
    # The recipes' batches of 128 cost seconds per step on a CPU; the machinery is the same at 8.
    for arch, recipe in list(RECIPES.items()):
        monkeypatch.setitem(RECIPES, arch, replace(recipe, batch_size=8))


@pytest.fixture(scope="module")
def small():
    return load_data("synthetic:shapes?n=8&train=24&size=32&background=plain")


def test_alexnet_is_adapted_to_small_inputs_and_the_classes():
    net = build(BaselineSpec("alexnet", 5, 32))
    assert isinstance(net, ResizeInput) and net.min_size == ALEXNET_MIN_SIZE
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    assert "upsampled from 32 to 63 px" in "; ".join(BaselineSpec("alexnet", 5, 32).adaptations())


def test_training_caches_and_a_second_run_trains_nothing(small, monkeypatch):
    first = load_baseline("resnet18", small, device=CPU, budget=TINY)
    assert first.info["source"] == "trained" and first.role == "baseline" and first.name == "resnet18"
    training_report = first.info["training"]
    assert (training_report["steps"], training_report["steps_budget"], training_report["stopped"]) == (2, 2, "steps")
    assert training_report["data"] == "stream" and training_report["images_seen"] == 16

    def refuse(*args, **kwargs):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr("auditkit.baselines.train_classifier", refuse)
    second = load_baseline("resnet18", small, device=CPU, budget=TINY)
    assert second.info["source"] == "cache" and second.info["training"] == training_report
    for (k, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), k
    # the wall-time cap is not part of the key: a run that finished its steps does not depend on it
    assert load_baseline("resnet18", small, device=CPU, budget=replace(TINY, max_seconds=5.0)).info["source"] == "cache"
    # a different step budget is a different cache entry
    with pytest.raises(AssertionError, match="trained again"):
        load_baseline("resnet18", small, device=CPU, budget=Budget(steps=3))


def test_generated_data_trains_on_fresh_images_disjoint_from_the_eval_and_train_images(small):
    stream = shapes_stream(small)
    assert stream is not None and shapes_stream(AuditData("plain", small.eval, small.train, num_classes=4)) is None
    fresh = stream.chunk(0, 32)
    assert torch.equal(fresh.images, stream.chunk(0, 32).images)  # deterministic
    assert fresh.images.shape[1:] == small.eval.images.shape[1:] and set(fresh.labels.tolist()) <= set(range(4))
    seen = torch.cat([small.eval.images, small.train.images]).flatten(1)
    assert torch.cdist(fresh.images.flatten(1), seen).min() > 1.0  # no image of the data comes back
    assert not torch.equal(stream.chunk(1, 32).images, fresh.images)


def test_a_step_budget_reaches_a_stated_accuracy_whatever_the_machine_load():
    # Two classes, each with its class-coloured corner marker, at 16 px: 30 steps of 16 fresh
    # images (480 images, a few seconds of CPU), at the learning rate the linear scaling rule
    # gives ResNet-18's 0.1 at batch 128 for batch 16. Nothing depends on the wall clock.
    data = load_data("synthetic:shapes?n=64&train=128&size=16&classes=2&background=plain&spurious=1.0")
    recipe = replace(RECIPES["resnet18"], batch_size=16, lr=0.02)
    torch.manual_seed(0)  # the initial weights (load_baseline seeds them the same way)
    net = build(BaselineSpec("resnet18", 2, 16))
    report = training.train_classifier(net, data, recipe, Budget(steps=30), device=CPU, seed=0)
    assert (report.steps, report.stopped, report.data, report.val_images) == (30, "steps", "stream", 128)
    assert report.val_acc >= 0.9  # chance is 0.5; measured 0.98 (other initial weights: 0.89-0.99)
    assert report.majority_fraction < 0.6
    with torch.no_grad():
        accuracy = (net(_normalized(data.eval.images)).argmax(1) == data.eval.labels).float().mean()
    assert accuracy >= 0.9  # the held-out eval split


def _normalized(images: torch.Tensor) -> torch.Tensor:
    from auditkit.target import IMAGENET_MEAN, IMAGENET_STD

    return (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_a_fixed_train_split_trains_in_reshuffled_passes_with_a_held_out_share():
    g = torch.Generator().manual_seed(0)
    data = AuditData(  # 16 train images, not generated
        "tensors", TensorSplit(torch.rand(8, 3, 32, 32, generator=g), torch.arange(8) % 2),
        TensorSplit(torch.rand(16, 3, 32, 32, generator=g), torch.arange(16) % 2), num_classes=2,
    )
    recipe = replace(RECIPES["resnet18"], batch_size=4)
    net = build(BaselineSpec("resnet18", 2, 32))
    report = training.train_classifier(net, data, recipe, Budget(epochs=2), device=CPU)
    # 2 of the 16 are held out for validation; 14 train images make 3 full batches of 4 a pass
    assert (report.data, report.train_images, report.val_images) == ("train split", 14, 2)
    assert (report.steps_budget, report.steps) == (8, 8)  # epochs x ceil(14 / 4)


def test_the_wall_time_cap_is_checked_every_step_and_reported(small):
    config = Config(baselines=["resnet18"], baseline_steps=50, baseline_seconds=1e-9, progress=False)
    lines, notes = [], []
    (target,) = load_baselines(config, small, CPU, announce=lines.append, notes=notes)
    report = target.info["training"]
    assert (report["steps"], report["steps_budget"], report["stopped"]) == (1, 50, "time_cap")
    assert "the wall-time cap (baseline_seconds=1e-09) stopped its training after 1 of 50 steps" in lines[0]
    assert any("depends on this machine's speed" in n for n in notes)


def test_googlenet_trains_with_auxiliary_heads_and_audits_without(small, monkeypatch):
    seen = []
    real_loss = training._loss

    def spy(out, y, aux_weight):
        seen.append((hasattr(out, "aux_logits1") and out.aux_logits1 is not None, aux_weight))
        return real_loss(out, y, aux_weight)

    monkeypatch.setattr(training, "_loss", spy)
    target = load_baseline("googlenet", small, device=CPU, budget=TINY, use_cache=False)
    assert seen and all(has_aux and weight == 0.3 for has_aux, weight in seen)
    assert target.model.aux1 is None and target.model.aux2 is None
    assert not any(k.startswith("aux") for k in target.model.state_dict())


def test_each_architecture_has_its_recipe_and_the_report_records_it(small):
    assert RECIPES["alexnet"].optimizer == "adamw" and RECIPES["resnet18"].optimizer == "sgd"
    assert {r.schedule for r in RECIPES.values()} == {"onecycle"}
    target = load_baseline("alexnet", small, device=CPU, budget=Budget(steps=1), use_cache=False)
    assert target.info["recipe"]["optimizer"] == "adamw" and target.info["recipe"]["lr"] == 3e-4


def test_a_user_checkpoint_is_loaded_instead_of_training(small, tmp_path, monkeypatch):
    reference = build(BaselineSpec("resnet18", small.num_classes, 32))
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    monkeypatch.setattr("auditkit.baselines.train_classifier", lambda *a, **k: pytest.fail("trained"))
    target = load_baseline("resnet18", small, device=CPU, checkpoint=str(path))
    assert target.info["source"] == f"checkpoint {path}"
    assert torch.equal(target.model.fc.weight, reference.fc.weight)
    wrong = tmp_path / "wrong.pt"
    torch.save(TinyGAPNet(num_classes=4).state_dict(), wrong)
    with pytest.raises(UsageError, match="does not fit torchvision resnet18"):
        load_baseline("resnet18", small, device=CPU, checkpoint=str(wrong))


def test_unknown_baseline_is_a_usage_error(small):
    with pytest.raises(UsageError, match="unknown baseline 'vgg11'"):
        load_baseline("vgg11", small, device=CPU)


class _Score(Check):
    id = "test.score"
    headline = ("score",)
    thresholds = (Threshold("score", "min", 0.9, baseline="ref"),)

    def run(self, ctx):
        return Findings(metrics={"score": 1.0 if ctx.target.role == "baseline" else ctx.settings.value})

    @dataclass
    class Settings:
        value: float = 0.95


@pytest.mark.parametrize("value, outcome", [(0.95, Outcome.PASSED), (0.85, Outcome.FAILED)])
def test_relative_thresholds_compare_with_the_baseline(small, value, outcome):
    config = Config(checks={"test.score": {"value": value}}, progress=False)
    pm = get_plugin_manager(autoload=False, extra=[CheckPlugin(_Score)])
    baseline = Target(TinyGAPNet(num_classes=4), name="ref", role="baseline")
    session = run_audit(config, pm, model=TinyGAPNet(num_classes=4), data=small, baselines=[baseline])
    results = {(r.model, r.check): r for r in session.results}
    assert [r.model for r in session.results] == ["ref", "target"]  # baselines run first
    assert results["ref", "test.score"].outcome is Outcome.PASSED  # relative thresholds gate the target only
    target = results["target", "test.score"]
    assert target.outcome is outcome
    assert target.thresholds["score@ref"] == {"op": "min", "value": 0.9, "baseline": "ref", "reference": 1.0}
    if outcome is Outcome.FAILED:
        # (an untrained TinyGAPNet predicts one class for every image: a note may follow)
        assert target.message.split("; note: ")[0] == "score=0.85 violates score >= 0.9 x ref"


@pytest.mark.parametrize("value", [0.95, 0.5])
def test_a_relative_threshold_against_a_weak_baseline_is_refused_not_evaluated(small, value):
    config = Config(checks={"test.score": {"value": value}}, progress=False)
    pm = get_plugin_manager(autoload=False, extra=[CheckPlugin(_Score)])
    baseline = Target(TinyGAPNet(num_classes=4), name="ref", role="baseline")
    baseline.info = {"quality": training_quality({"val_acc": 0.25, "val_images": 100}, 4)}
    session = run_audit(config, pm, model=TinyGAPNet(num_classes=4), data=small, baselines=[baseline])
    target = {(r.model, r.check): r for r in session.results}["target", "test.score"]
    # 0.5 would violate 0.9 x ref's 1.0: refused, it neither fails nor passes the check
    assert target.outcome is Outcome.PASSED
    assert target.thresholds["score@ref"] == {"op": "min", "value": 0.9, "baseline": "ref", "weak_baseline": True,
                                              "refused": True}
    assert target.message.split("; note: ")[0] == (
        "threshold score >= 0.9 x ref not evaluated: ref is a weak baseline (it did not learn the task; "
        "see its validation accuracy)"
    )


@pytest.mark.parametrize(
    "val_acc, n, classes, weak",
    # Wilson 95% lower ends: 40/115 -> 0.267 > 0.25; 33/115 -> 0.212; 0.6 on 10 -> 0.31 < 0.5
    [(40 / 115, 115, 4, False), (33 / 115, 115, 4, True), (0.6, 10, 2, True), (0.95, 100, 2, False)],
)
def test_a_baseline_no_better_than_chance_is_called_weak(val_acc, n, classes, weak):
    quality = training_quality({"val_acc": val_acc, "val_images": n}, classes)
    assert quality["weak"] is weak and quality["chance"] == 1 / classes
    assert quality["val_acc_ci_low"] <= val_acc <= quality["val_acc_ci_high"]
    assert ("not above chance" in quality.get("note", "")) is weak


@pytest.mark.parametrize(
    "share, label_share, constant",
    # one class for 99% of the images where it is 30% of the labels: constant, whatever the accuracy;
    # 97% where 96% of the labels are that class: a good model of skewed data, not constant
    [(0.99, 0.30, True), (1.0, 0.25, True), (0.97, 0.96, False), (0.90, 0.25, False)],
)
def test_a_baseline_predicting_one_class_for_nearly_every_image_is_called_weak(share, label_share, constant):
    report = {"val_acc": 0.31, "val_images": 2000, "majority_class": 2, "majority_fraction": share,
              "majority_label_fraction": label_share}
    quality = training_quality(report, 4)  # 0.31 on 2000 images is above chance (0.25) with 95% confidence
    assert quality["constant"] is constant and quality["weak"] is constant
    assert quality["majority_fraction"] == share
    assert (f"it predicts class 2 for {share:.0%} of 2000 validation images" in quality.get("note", "")) is constant


def test_weak_baselines_are_announced_and_reported(small, tmp_path):
    lines = []
    config = Config(baselines=["resnet18"], baseline_steps=1, progress=False)
    (target,) = load_baselines(config, small, CPU, announce=lines.append)
    quality = target.info["quality"]
    assert quality["weak"]  # one step of 8 images: at chance
    assert "warning: " in lines[0] and "--baseline-steps" in lines[0] and ", 1 steps, validation accuracy" in lines[0]
    assert target.describe()["info"]["quality"]["weak"] is True


def _save_pretrained(arch: str, directory, **kwargs) -> dict[str, torch.Tensor]:
    """A stand-in for torchvision's pretrained checkpoint: the architecture's state_dict with
    seeded random weights, under the file name of the weights' URL (nothing is downloaded)."""
    torch.manual_seed(3)
    state = torchvision.models.get_model(arch, weights=None, **kwargs).state_dict()
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / checkpoint_name(PRETRAINED[arch]))
    return state


def _hub_dir(tmp_path):
    return tmp_path / "torch" / "hub" / "checkpoints"  # $TORCH_HOME/hub/checkpoints, as the fixture sets it


def _user_data(classes: int = 4, n: int = 8) -> AuditData:
    """Data that is not generated: the baselines fine-tune pretrained weights by default."""
    g = torch.Generator().manual_seed(0)
    return AuditData(
        "user", TensorSplit(torch.rand(n, 3, 32, 32, generator=g), torch.arange(n) % classes),
        TensorSplit(torch.rand(2 * n, 3, 32, 32, generator=g), torch.arange(2 * n) % classes), num_classes=classes,
    )


def test_user_data_fine_tunes_pretrained_weights_from_the_torch_hub_cache(tmp_path, monkeypatch):
    state = _save_pretrained("resnet18", _hub_dir(tmp_path))
    seen = {}
    real = training.train_classifier

    def spy(model, data, recipe, budget, **kwargs):
        seen.update(conv1=model.conv1.weight.detach().clone(), classes=model.fc.out_features, lr=recipe.lr)
        return real(model, data, recipe, budget, **kwargs)

    monkeypatch.setattr("auditkit.baselines.train_classifier", spy)
    data = _user_data()
    target = load_baseline("resnet18", data, device=CPU, budget=TINY)
    assert torch.equal(seen["conv1"], state["conv1.weight"])  # training starts from the checkpoint
    assert seen["classes"] == 4 and seen["lr"] == pytest.approx(RECIPES["resnet18"].lr / 10)
    assert target.info["source"] == "trained" and target.info["training"]["data"] == "train split"
    assert target.info["init"].startswith("pretrained ResNet18_Weights.IMAGENET1K_V1")
    # from scratch on request: a different cache entry, trained without the weights
    scratch = load_baseline("resnet18", data, device=CPU, budget=TINY, init="scratch")
    assert scratch.info["source"] == "trained" and "init" not in scratch.info
    assert not torch.equal(scratch.model.conv1.weight, state["conv1.weight"])


def test_generated_data_trains_from_scratch_unless_asked_to_fine_tune(small, tmp_path):
    state = _save_pretrained("resnet18", tmp_path / "w")
    assert "init" not in load_baseline("resnet18", small, device=CPU, budget=TINY).info
    target = load_baseline("resnet18", small, device=CPU, budget=TINY, weights_dir=str(tmp_path / "w"), init="pretrained")
    assert target.info["init"].startswith(f"pretrained ResNet18_Weights.IMAGENET1K_V1 ({tmp_path / 'w'}")
    assert not torch.equal(target.model.conv1.weight, state["conv1.weight"])  # fine-tuned from it


def test_missing_pretrained_weights_are_downloaded_into_the_torch_hub_cache(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):  # what the network would deliver
        calls.append((url, dst, hash_prefix))
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    load_baseline("resnet18", _user_data(), device=CPU, budget=TINY, use_cache=False)
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    path = _hub_dir(tmp_path) / checkpoint_name(weights)
    assert calls == [(weights.url, str(path), "f37072fd")]  # torchvision's own check of the file's hash
    assert path.is_file()
    load_baseline("resnet18", _user_data(), device=CPU, budget=TINY, use_cache=False)
    assert len(calls) == 1  # cached: never downloaded twice


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_with_an_empty_cache_names_the_file_to_put_there(tmp_path, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("AUDITKIT_OFFLINE", "1")
    with pytest.raises(OfflineError) as caught:
        load_baseline("googlenet", _user_data(), device=CPU, budget=TINY, offline=True if how == "argument" else None)
    path = _hub_dir(tmp_path) / checkpoint_name(torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1)
    assert caught.value.path == path
    message = str(caught.value)
    assert "\n" not in message and message.startswith("baseline googlenet: offline")
    assert f"put {path} in place (from https://download.pytorch.org/models/" in message


def test_offline_from_the_command_line_and_the_config_file(tmp_path, monkeypatch, capsys):
    from auditkit.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["run", "--model", "auditkit.testing.models:tiny_factory", "--data", "synthetic:shapes?n=4&train=8&size=32",
            "--checks", "accuracy.clean", "--baselines", "resnet18", "--baseline-init", "pretrained", "-q"]
    assert main([*argv, "--offline"]) == 4
    path = _hub_dir(tmp_path) / checkpoint_name(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"auditkit: error: baseline resnet18: offline (--offline, offline = true or AUDITKIT_OFFLINE=1) and "
                   f"torchvision's ResNet18_Weights.IMAGENET1K_V1 is not on disk: put {path} in place (from "
                   f"{torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url}) or give --weights-dir with that file"]
    (tmp_path / "auditkit.toml").write_text("offline = true\n")
    assert main(argv) == 4 and str(path) in capsys.readouterr().err


def test_googlenet_fine_tunes_with_the_input_transform_its_checkpoint_expects(small, tmp_path):
    _save_pretrained("googlenet", tmp_path, aux_logits=True, init_weights=False, transform_input=True)
    target = load_baseline(
        "googlenet", small, device=CPU, budget=TINY, weights_dir=str(tmp_path), use_cache=False, init="pretrained"
    )
    assert target.model.transform_input and target.model.aux1 is None
    assert target(torch.rand(2, 3, 32, 32)).shape == (2, small.num_classes)


def test_pretrained_weights_are_used_as_they_are_for_a_1000_class_task(tmp_path, monkeypatch):
    state = _save_pretrained("alexnet", _hub_dir(tmp_path))
    images = torch.rand(4, 3, 64, 64)
    data = AuditData("imagenet-like", TensorSplit(images, torch.arange(4)), num_classes=1000)
    monkeypatch.setattr("auditkit.baselines.train_classifier", lambda *a, **k: pytest.fail("trained"))
    target = load_baseline("alexnet", data, device=CPU)
    assert target.info["source"].startswith("pretrained AlexNet_Weights.IMAGENET1K_V1")
    torch.testing.assert_close(target.model.classifier[6].weight, state["classifier.6.weight"])
    assert not needs_train_split("alexnet", data)
    # a file that is not that architecture's checkpoint is a clear error, not a silent partial load
    torch.save({"conv.weight": torch.zeros(1)}, next(_hub_dir(tmp_path).glob("alexnet-*.pth")))
    with pytest.raises(UsageError, match="is not torchvision's AlexNet_Weights.IMAGENET1K_V1"):
        load_baseline("alexnet", data, device=CPU)


def test_only_user_data_needs_a_train_split_for_the_baselines(small):
    assert not needs_train_split("resnet18", small)  # generated: trains on fresh images
    assert needs_train_split("resnet18", _user_data())
    assert not needs_train_split("resnet18", _user_data(), checkpoint="r18.pt")


def test_budget_init_offline_and_weights_dir_from_the_command_line(small, tmp_path, monkeypatch):
    from auditkit.cli import build_parser, config_from_args

    monkeypatch.chdir(tmp_path)
    argv = ["run", "--model", "m", "--weights-dir", "w", "--baseline-steps", "300", "--baseline-seconds", "12.5",
            "--baseline-init", "pretrained", "--offline"]
    config = config_from_args(build_parser().parse_args(argv), argv)
    assert (config.weights_dir, config.baseline_steps, config.baseline_epochs, config.baseline_seconds) == ("w", 300, None, 12.5)
    assert (config.baseline_init, config.offline) == ("pretrained", True)
    with pytest.raises(UsageError, match="--weights-dir 'w' is not a directory; expected a folder"):
        load_baselines(config, small, CPU)
    argv = ["run", "--model", "m", "--baseline-epochs", "3"]
    (tmp_path / "auditkit.toml").write_text("baseline_steps = 100\nbaseline_init = 'scratch'\n")
    config = config_from_args(build_parser().parse_args(argv), argv)
    assert (config.baseline_steps, config.baseline_epochs, config.baseline_init) == (None, 3, "scratch")
    both = ["run", "--model", "m", "--baseline-steps", "3", "--baseline-epochs", "3"]
    with pytest.raises(UsageError, match="--baseline-steps and --baseline-epochs both set the training budget"):
        config_from_args(build_parser().parse_args(both), both)
    config.baseline_seconds = 0
    with pytest.raises(UsageError, match="baseline budget: steps and epochs must be at least 1 and the seconds cap above 0"):
        load_baselines(config, small, CPU)


def test_weak_baselines_are_named_in_the_markdown_summary_and_the_scorecard(small, tmp_path):
    run = auditkit.audit(
        TinyGAPNet(num_classes=small.num_classes), small, ["accuracy.clean"], baselines=["resnet18"],
        baseline_epochs=1, device="cpu", md=str(tmp_path / "s.md"), html=str(tmp_path / "s.html"),
        json=str(tmp_path / "r.json"),
    )
    assert run.exit_code in (0, 1)  # the audit ran; an untrained target may fail accuracy.clean's rule
    md = (tmp_path / "s.md").read_text()
    assert "Weak baselines (validation accuracy not above chance" in md and "resnet18 (" in md
    assert any("| resnet18 ⚠️ weak |" in line for line in md.splitlines() if line.startswith("| check"))  # the table header
    page = (tmp_path / "s.html").read_text()
    assert '<strong class="weak">weak baseline:</strong> validation accuracy' in page
    assert '<span class="weak-tag"' in page and "Weak baselines\n(resnet18) did not learn the task" in page
    assert 'class="value weak-model" data-check="accuracy.clean" data-metric="top1" data-model="resnet18"' in page
    assert "value best" not in page  # a weak baseline is never ranked, and one model left is no ranking
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, load_schema())
    (model,) = [m for m in report["models"] if m["name"] == "resnet18"]
    assert model["info"]["quality"]["weak"] is True and model["info"]["source"] == "trained"
    assert 0 <= model["info"]["quality"]["majority_fraction"] <= 1


def test_a_weak_baseline_gets_no_star_and_is_marked_in_the_charts():
    from auditkit.check import CheckResult
    from auditkit.reporters import svg
    from auditkit.reporters.comparison import comparison_groups

    def result(model, robust_acc, role="baseline"):
        return CheckResult("whitebox.pgd", model, Outcome.PASSED, {"robust_acc": robust_acc}, role=role,
                           headline=("robust_acc",), directions={"robust_acc": "higher"})

    # the constant predictor "wins" robust accuracy: no attack changes a constant output
    results = [result("target", 0.2, "target"), result("resnet18", 0.4), result("alexnet", 1.0)]
    models = ["target", "resnet18", "alexnet"]
    (row,) = comparison_groups(results, models)[0]["rows"]
    assert [c["classes"] for c in row["cells"]] == ["value", "value", "value best"]
    (row,) = comparison_groups(results, models, weak=["alexnet"])[0]["rows"]
    assert [c["classes"] for c in row["cells"]] == ["value", "value best", "value weak-model"]
    assert row["cells"][2]["title"] == "weak baseline: not ranked"
    series = [{"label": m, "x": [0, 1], "y": [0.5, 0.4 - 0.1 * k]} for k, m in enumerate(models)]
    with svg.weak_models(["alexnet"]):
        chart = svg.line_chart(series, "eps", "robust accuracy")
    assert ">alexnet (weak baseline)</text>" in chart and ">resnet18</text>" in chart
    assert 'stroke-opacity="0.4"' in chart
    assert "weak baseline" not in svg.line_chart(series, "eps", "robust accuracy")  # outside the block: as before


def test_training_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone(small):
    torch.manual_seed(123)
    expected_next = torch.rand(3, generator=torch.Generator().manual_seed(123))
    runs = [load_baseline("resnet18", small, device=CPU, budget=TINY, seed=s, use_cache=False) for s in (7, 7, 8)]
    same = [torch.equal(a, b) for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values())]
    assert all(same)
    timing = ("seconds", "images_per_second")
    assert runs[0].info["training"] == runs[1].info["training"] | {k: runs[0].info["training"][k] for k in timing}
    assert not torch.equal(runs[0].model.fc.weight, runs[2].model.fc.weight)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream continues untouched


def test_a_baseline_that_crashes_is_left_out_and_the_audit_goes_on(small, tmp_path, monkeypatch):
    real = training.train_classifier

    def crash_googlenet(model, data, recipe, budget, **kwargs):
        if kwargs.get("name") == "googlenet":
            raise RuntimeError("simulated: CUDA out of memory")
        return real(model, data, recipe, budget, **kwargs)

    monkeypatch.setattr("auditkit.baselines.train_classifier", crash_googlenet)
    run = auditkit.audit(
        TinyGAPNet(num_classes=small.num_classes), small, ["accuracy.clean"], baselines=["googlenet", "resnet18"],
        baseline_epochs=1, device="cpu", json=str(tmp_path / "r.json"), html=str(tmp_path / "s.html"),
    )
    assert run.exit_code in (0, 1)  # the audit ran; an untrained target may fail accuracy.clean's rule
    assert sorted({r.model for r in run.results}) == ["resnet18", "target"]
    assert "<li>baseline googlenet left out: it could not be trained or loaded" in (tmp_path / "s.html").read_text()
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, load_schema())
    assert report["warnings"][0] == (
        "baseline googlenet left out: it could not be trained or loaded (RuntimeError: simulated: CUDA out of memory)"
    )
    assert report["warnings"][1].startswith("baseline resnet18: validation accuracy")  # weak after one pass
