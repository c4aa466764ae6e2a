"""Classic baselines: architectures adapted to the task, weights from a checkpoint, the cache
or training with the classic recipes, and relative thresholds against them."""
from __future__ import annotations

import json
import os
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
    Budget,
    BaselineSpec,
    ResizeInput,
    build,
    load_baseline,
    training_quality,
)
from auditkit.baselines import training
from auditkit.config import Config
from auditkit.data.base import AuditData, TensorSplit
from auditkit.data.loaders import load_data
from auditkit.errors import UsageError
from auditkit.main import load_baselines, run_audit
from auditkit.plugin_manager import get_plugin_manager
from auditkit.reporters.json_report import load_schema
from auditkit.testing.models import TinyGAPNet

CPU = torch.device("cpu")
TINY = Budget(max_epochs=1, max_seconds=60, patience=1)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no pretrained weights unless a test puts them


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
    assert first.info["training"]["epochs"] == 1

    def refuse(*args, **kwargs):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr("auditkit.baselines.train_classifier", refuse)
    second = load_baseline("resnet18", small, device=CPU, budget=TINY)
    assert second.info["source"] == "cache"
    for (k, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), k
    # a different budget is a different cache entry
    with pytest.raises(AssertionError, match="trained again"):
        load_baseline("resnet18", small, device=CPU, budget=Budget(max_epochs=2, max_seconds=60, patience=1))


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


def test_training_improves_accuracy_above_chance():
    # A learnable task for a tiny budget: every image carries its class's coloured marker
    # (shapes alone take ResNet-18 far longer than a test may run on a CPU; see the README).
    data = load_data("synthetic:shapes?n=64&train=512&size=32&background=plain&classes=2&spurious=1.0")
    budget = Budget(max_epochs=8, max_seconds=120, patience=8)
    target = load_baseline("resnet18", data, device=CPU, budget=budget, use_cache=False)
    report = target.info["training"]
    assert report["val_acc"] >= 0.8  # chance is 0.5; measured 0.96
    eval_split = data.split("eval")
    with torch.no_grad():
        accuracy = (target(eval_split.images).argmax(1) == eval_split.labels).float().mean()
    assert accuracy >= 0.8  # the held-out eval split, as the audit sees the baseline; measured 0.94


def _constant_validation(monkeypatch):
    monkeypatch.setattr(training, "evaluate", lambda *args, **kwargs: (1.0, 0.5))


def test_warm_up_raises_the_learning_rate_linearly(small, monkeypatch):
    _constant_validation(monkeypatch)
    recipe = replace(RECIPES["resnet18"], batch_size=64, warmup_steps=10)  # 20 train images: 1 step an epoch
    net = build(BaselineSpec("resnet18", small.num_classes, 32))
    report = training.train_classifier(net, small, recipe, Budget(max_epochs=3, patience=30), device=CPU)
    assert report.steps == 3 and report.lr_drops == 0
    assert report.final_lr == pytest.approx(recipe.lr * 4 / 10)  # after 3 steps the 4th of 10 warm-up steps


@pytest.mark.parametrize("min_steps, drops, epochs", [(0, 1, 6), (150, 0, 12)])
def test_plateau_patience_counts_optimizer_steps_not_just_epochs(small, monkeypatch, min_steps, drops, epochs):
    # 1 step an epoch and a validation loss that never improves. With patience 2 epochs the
    # rate is divided after epoch 4 and training stops after 2 * 2 + 1 epochs without gain;
    # with 150 steps of patience neither happens within 12 epochs.
    _constant_validation(monkeypatch)
    recipe = replace(RECIPES["resnet18"], batch_size=64, warmup_steps=0, plateau_patience=2, plateau_min_steps=min_steps)
    net = build(BaselineSpec("resnet18", small.num_classes, 32))
    report = training.train_classifier(net, small, recipe, Budget(max_epochs=12, patience=1), device=CPU)
    assert (report.lr_drops, report.epochs) == (drops, epochs)
    assert report.stopped == ("early_stop" if min_steps == 0 else "max_epochs")
    assert report.final_lr == pytest.approx(recipe.lr * 0.1**drops)


class _Score(Check):
    id = "test.score"
    headline = ("score",)
    thresholds = (Threshold("score", "min", 0.9, baseline="ref"),)

    def run(self, ctx):
        return Findings(metrics={"score": 1.0 if ctx.target.role == "baseline" else ctx.settings.value})

    @dataclass
    class Settings:
        value: float = 0.95


class _Plugin:
    @auditkit.hookimpl
    def auditkit_collect_checks(self, config):
        return [_Score]


@pytest.mark.parametrize("value, outcome", [(0.95, Outcome.PASSED), (0.85, Outcome.FAILED)])
def test_relative_thresholds_compare_with_the_baseline(small, value, outcome):
    config = Config(checks={"test.score": {"value": value}}, progress=False)
    pm = get_plugin_manager(autoload=False, extra=[_Plugin()])
    baseline = Target(TinyGAPNet(num_classes=4), name="ref", role="baseline")
    session = run_audit(config, pm, model=TinyGAPNet(num_classes=4), data=small, baselines=[baseline])
    results = {(r.model, r.check): r for r in session.results}
    assert [r.model for r in session.results] == ["ref", "target"]  # baselines run first
    assert results["ref", "test.score"].outcome is Outcome.PASSED  # relative thresholds gate the target only
    target = results["target", "test.score"]
    assert target.outcome is outcome
    assert target.thresholds["score@ref"] == {"op": "min", "value": 0.9, "baseline": "ref", "reference": 1.0}
    if outcome is Outcome.FAILED:
        assert target.message == "score=0.85 violates score >= 0.9 x ref"


def test_a_relative_threshold_against_a_weak_baseline_says_so(small):
    config = Config(checks={"test.score": {"value": 0.95}}, progress=False)
    pm = get_plugin_manager(autoload=False, extra=[_Plugin()])
    baseline = Target(TinyGAPNet(num_classes=4), name="ref", role="baseline")
    baseline.info = {"quality": training_quality({"val_acc": 0.25, "val_images": 100}, 4)}
    session = run_audit(config, pm, model=TinyGAPNet(num_classes=4), data=small, baselines=[baseline])
    target = {(r.model, r.check): r for r in session.results}["target", "test.score"]
    assert target.outcome is Outcome.PASSED and target.thresholds["score@ref"]["weak_baseline"] is True
    assert target.message == "ref is a weak baseline (validation accuracy not above chance)"


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


def test_weak_baselines_are_announced_and_reported(small, tmp_path):
    lines = []
    config = Config(baselines=["resnet18"], baseline_epochs=1, baseline_seconds=60, progress=False)
    (target,) = load_baselines(config, small, CPU, announce=lines.append)
    quality = target.info["quality"]
    assert quality["weak"]  # one epoch on 20 images: at chance
    assert "warning: validation accuracy" in lines[0] and "--baseline-epochs" in lines[0]
    assert target.describe()["info"]["quality"]["weak"] is True


def _save_pretrained(arch: str, directory, **kwargs) -> dict[str, torch.Tensor]:
    """A stand-in for torchvision's pretrained checkpoint: the architecture's state_dict with
    seeded random weights, under the file name of the weights' URL (nothing is downloaded)."""
    torch.manual_seed(3)
    state = torchvision.models.get_model(arch, weights=None, **kwargs).state_dict()
    enum_name, member = PRETRAINED[arch].split(".")
    url = getattr(getattr(torchvision.models, enum_name), member).url
    torch.save(state, directory / os.path.basename(url))
    return state


def test_local_pretrained_weights_are_fine_tuned_for_another_task(small, tmp_path, monkeypatch):
    state = _save_pretrained("resnet18", tmp_path)
    seen = {}
    real = training.train_classifier

    def spy(model, data, recipe, budget, **kwargs):
        seen.update(conv1=model.conv1.weight.detach().clone(), classes=model.fc.out_features, lr=recipe.lr)
        return real(model, data, recipe, budget, **kwargs)

    monkeypatch.setattr("auditkit.baselines.train_classifier", spy)
    target = load_baseline("resnet18", small, device=CPU, budget=TINY, weights_dir=str(tmp_path))
    assert torch.equal(seen["conv1"], state["conv1.weight"])  # training starts from the checkpoint
    assert seen["classes"] == small.num_classes and seen["lr"] == pytest.approx(RECIPES["resnet18"].lr / 10)
    assert target.info["source"] == "trained"
    assert target.info["init"].startswith("pretrained ResNet18_Weights.IMAGENET1K_V1")
    # without the weights it trains from scratch, a different cache entry
    scratch = load_baseline("resnet18", small, device=CPU, budget=TINY)
    assert scratch.info["source"] == "trained" and "init" not in scratch.info


def test_googlenet_fine_tunes_with_the_input_transform_its_checkpoint_expects(small, tmp_path):
    _save_pretrained("googlenet", tmp_path, aux_logits=True, init_weights=False, transform_input=True)
    target = load_baseline("googlenet", small, device=CPU, budget=TINY, weights_dir=str(tmp_path), use_cache=False)
    assert target.model.transform_input and target.model.aux1 is None
    assert target(torch.rand(2, 3, 32, 32)).shape == (2, small.num_classes)


def test_pretrained_weights_are_used_as_they_are_for_a_1000_class_task(tmp_path, monkeypatch):
    state = _save_pretrained("alexnet", tmp_path)
    images = torch.rand(4, 3, 64, 64)
    data = AuditData("imagenet-like", TensorSplit(images, torch.arange(4)), num_classes=1000)
    monkeypatch.setattr("auditkit.baselines.train_classifier", lambda *a, **k: pytest.fail("trained"))
    target = load_baseline("alexnet", data, device=CPU, weights_dir=str(tmp_path))
    assert target.info["source"].startswith("pretrained AlexNet_Weights.IMAGENET1K_V1")
    torch.testing.assert_close(target.model.classifier[6].weight, state["classifier.6.weight"])
    # a file that is not that architecture's checkpoint is a clear error, not a silent partial load
    torch.save({"conv.weight": torch.zeros(1)}, next(tmp_path.glob("alexnet-*.pth")))
    with pytest.raises(UsageError, match="is not torchvision's AlexNet_Weights.IMAGENET1K_V1"):
        load_baseline("alexnet", data, device=CPU, weights_dir=str(tmp_path))


def test_budget_and_weights_dir_from_the_command_line(small, tmp_path, monkeypatch):
    from auditkit.cli import build_parser, config_from_args

    monkeypatch.chdir(tmp_path)
    argv = ["run", "--model", "m", "--weights-dir", "w", "--baseline-epochs", "3", "--baseline-seconds", "12.5"]
    config = config_from_args(build_parser().parse_args(argv), argv)
    assert (config.weights_dir, config.baseline_epochs, config.baseline_seconds) == ("w", 3, 12.5)
    with pytest.raises(UsageError, match="--weights-dir 'w' is not a directory; expected a folder"):
        load_baselines(config, small, CPU)
    config.weights_dir = None
    config.baseline_seconds = 0
    with pytest.raises(UsageError, match="baseline budget: epochs must be at least 1 and seconds above 0"):
        load_baselines(config, small, CPU)


def test_weak_baselines_are_named_in_the_markdown_summary_and_the_scorecard(small, tmp_path):
    run = auditkit.audit(
        TinyGAPNet(num_classes=small.num_classes), small, ["accuracy.clean"], baselines=["resnet18"],
        baseline_epochs=1, device="cpu", md=str(tmp_path / "s.md"), html=str(tmp_path / "s.html"),
        json=str(tmp_path / "r.json"),
    )
    assert run.exit_code == 0
    md = (tmp_path / "s.md").read_text()
    assert "Weak baselines (validation accuracy not above chance" in md and "resnet18 (" in md
    page = (tmp_path / "s.html").read_text()
    assert '<strong class="weak">weak baseline:</strong> validation accuracy' in page
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, load_schema())
    (model,) = [m for m in report["models"] if m["name"] == "resnet18"]
    assert model["info"]["quality"]["weak"] is True and model["info"]["source"] == "trained"


def test_training_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone(small):
    torch.manual_seed(123)
    expected_next = torch.rand(3, generator=torch.Generator().manual_seed(123))
    runs = [load_baseline("resnet18", small, device=CPU, budget=TINY, seed=s, use_cache=False) for s in (7, 7, 8)]
    same = [torch.equal(a, b) for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values())]
    assert all(same)
    assert runs[0].info["training"] == runs[1].info["training"] | {"seconds": runs[0].info["training"]["seconds"]}
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
    assert run.exit_code == 0
    assert sorted({r.model for r in run.results}) == ["resnet18", "target"]
    assert "<li>baseline googlenet left out: it could not be trained or loaded" in (tmp_path / "s.html").read_text()
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, load_schema())
    assert report["warnings"][0] == (
        "baseline googlenet left out: it could not be trained or loaded (RuntimeError: simulated: CUDA out of memory)"
    )
    assert report["warnings"][1].startswith("baseline resnet18: validation accuracy")  # weak after one epoch
