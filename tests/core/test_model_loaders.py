"""Tests for auditkit.models.loaders: every --model SPEC form, round trips against the original
module, and the one-line usage errors. Tiny models, 32x32 inputs, nothing downloaded."""
from __future__ import annotations

import re
import textwrap
import warnings

import pytest
import torch
import torchvision

from auditkit.errors import UsageError
from auditkit.models.loaders import SPEC_FORMS, ModelOptions, describe_spec_forms, load_model
from auditkit.target import IMAGENET_MEAN, IMAGENET_STD, Target
from auditkit.testing.models import DictOutputNet, NaNNet, TinyFCNet, TinyGAPNet, TupleOutputNet, tiny_factory

RESNET18_CHECKPOINT = "resnet18-f37072fd.pth"  # basename of ResNet18_Weights.IMAGENET1K_V1.url


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def gap_net() -> TinyGAPNet:
    torch.manual_seed(0)
    net = TinyGAPNet(num_classes=4)
    # Non-trivial BN statistics, so a lost buffer would change the logits.
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub directory, so the real cache is never read or written."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def logits_of(target: Target, x: torch.Tensor) -> torch.Tensor:
    with target, torch.no_grad():
        return target(x)


def write_module(path, source: str):
    path.write_text(textwrap.dedent(source))
    return path


# -- factories ----------------------------------------------------------------------------------


def test_module_factory_spec_passes_num_classes():
    target = load_model("auditkit.testing.models:tiny_factory", ModelOptions(num_classes=3))

    assert isinstance(target, Target)
    assert isinstance(target.model, TinyGAPNet)
    assert target.model.fc.out_features == 3
    assert target.spec == "auditkit.testing.models:tiny_factory"
    assert target.mean_std == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # no normalization unless asked
    assert "TinyGAPNet" in target.description


def test_file_factory_with_wrapped_state_dict_gives_original_logits(tmp_path, gap_net, images):
    factory = write_module(
        tmp_path / "netdef.py",
        """
        from auditkit.testing.models import TinyGAPNet

        def build(num_classes=10):
            return TinyGAPNet(num_classes=num_classes)
        """,
    )
    # A training checkpoint from nn.DataParallel: nested under "state_dict", keys prefixed.
    checkpoint = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in gap_net.state_dict().items()}}
    torch.save(checkpoint, tmp_path / "ckpt.pt")

    target = load_model(f"{factory}:build", ModelOptions(weights=str(tmp_path / "ckpt.pt"), num_classes=4))

    assert target.model.fc.out_features == 4
    torch.testing.assert_close(logits_of(target, images), gap_net(images))
    assert "ckpt.pt" in target.description


def test_factory_without_num_classes_parameter_warns_and_builds(tmp_path):
    factory = write_module(
        tmp_path / "fixed.py",
        """
        from auditkit.testing.models import TinyGAPNet

        def build():
            return TinyGAPNet(num_classes=2)
        """,
    )
    with pytest.warns(UserWarning, match="takes no num_classes parameter"):
        target = load_model(f"{factory}:build", ModelOptions(num_classes=7))
    assert target.model.fc.out_features == 2


def test_weights_with_mismatched_keys_list_missing_and_unexpected(tmp_path, gap_net):
    state = {k.replace("fc.", "head."): v for k, v in gap_net.state_dict().items()}
    torch.save(state, tmp_path / "renamed.pt")

    with pytest.raises(UsageError) as err:
        load_model("auditkit.testing.models:tiny_factory", ModelOptions(weights=str(tmp_path / "renamed.pt")))

    message = str(err.value)
    assert "2 missing keys (first: fc.weight, fc.bias), 2 unexpected keys (first: head.weight, head.bias)" in message
    assert "\n" not in message


def test_weights_with_wrong_shapes_name_the_shapes(tmp_path):
    torch.save(TinyGAPNet(num_classes=3).state_dict(), tmp_path / "three.pt")

    with pytest.raises(UsageError, match=r"fc\.weight \[3, 16\] \(model has \[4, 16\]\).*num_classes"):
        load_model("auditkit.testing.models:tiny_factory", ModelOptions(weights=str(tmp_path / "three.pt")))


def test_missing_weights_file(tmp_path):
    with pytest.raises(UsageError, match=r"--weights .*nope\.pt: no such file; expected a state_dict"):
        load_model("auditkit.testing.models:tiny_factory", ModelOptions(weights=str(tmp_path / "nope.pt")))


def test_factory_returning_non_module(tmp_path):
    factory = write_module(tmp_path / "bad.py", "def make():\n    return 42\n")
    with pytest.raises(UsageError, match=r"the factory make\(\) returned int, expected a torch\.nn\.Module"):
        load_model(f"{factory}:make", ModelOptions())


def test_factory_raising_names_spec_and_cause(tmp_path):
    factory = write_module(tmp_path / "raises.py", "def make():\n    raise ValueError('depth must be even')\n")
    with pytest.raises(UsageError) as err:
        load_model(f"{factory}:make", ModelOptions())
    assert str(err.value) == f"model '{factory}:make': the factory make() raised ValueError: depth must be even"


def test_factory_file_missing_attribute_suggests_close_name(tmp_path):
    factory = write_module(tmp_path / "net.py", "def make_model():\n    pass\n")
    with pytest.raises(UsageError, match=r"has no attribute 'make_modle'; did you mean make_model\?"):
        load_model(f"{factory}:make_modle", ModelOptions())


def test_factory_file_missing(tmp_path):
    with pytest.raises(UsageError, match=r"no such file .*absent\.py; expected path/to/file\.py:factory"):
        load_model(f"{tmp_path / 'absent.py'}:make", ModelOptions())


def test_factory_file_that_fails_to_import(tmp_path):
    factory = write_module(tmp_path / "broken.py", "import not_a_real_module_xyz\n")
    with pytest.raises(UsageError, match=r"importing .*broken\.py failed: ModuleNotFoundError"):
        load_model(f"{factory}:make", ModelOptions())


def test_module_factory_for_missing_module():
    with pytest.raises(UsageError, match=r"no module named 'no_such_pkg_xyz'"):
        load_model("no_such_pkg_xyz.models:make", ModelOptions())


# -- torch.export -------------------------------------------------------------------------------


def test_export_with_dynamic_batch_round_trips_with_hooks_and_gradients(tmp_path, gap_net, images):
    program = torch.export.export(gap_net, (images[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "gap.pt2")

    target = load_model(str(tmp_path / "gap.pt2"), ModelOptions())

    assert target.input_size == (3, 32, 32)
    assert target.hookable
    assert all(p.grad is None for p in target.model.parameters())  # the load-time check left no grads
    torch.testing.assert_close(logits_of(target, images), gap_net(images))  # batch 3, exported at 2
    with target:  # eval() is accepted
        target.probe(images[:2])
        layer_names = [layer.name for layer in target.layers]
        assert layer_names[-3:] == ["pool", "flatten", "fc"]
        x = images.clone().requires_grad_(True)
        with target.capture("features") as feats:
            target(x).sum().backward()
    assert feats["features"].shape == (3, 16, 16, 16)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_export_with_fixed_batch_runs_any_batch_in_chunks(tmp_path, gap_net, images):
    torch.export.save(torch.export.export(gap_net, (images[:2],)), tmp_path / "fixed.pt2")

    target = load_model(str(tmp_path / "fixed.pt2"), ModelOptions())

    assert not target.hookable
    assert "batch size fixed at 2" in target.description
    many = torch.rand(5, 3, 32, 32)
    torch.testing.assert_close(logits_of(target, many), gap_net(many))
    with target, pytest.raises(Exception, match=r"expects \[3, 32, 32\]"):
        target(torch.rand(2, 3, 40, 40))  # shape guard failure becomes a TargetError


def test_export_in_training_mode_warns(tmp_path, images):
    torch.export.save(torch.export.export(TinyFCNet().train(), (images[:2],)), tmp_path / "train.pt2")

    with pytest.warns(UserWarning, match="exported in training mode: its dropout cannot be switched"):
        target = load_model(str(tmp_path / "train.pt2"), ModelOptions())
    assert "exported in training mode" in target.description


class _DetachingNet(torch.nn.Module):
    """Quantizes its input and detaches it, as some preprocessing does: no input gradient."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(torch.round(x * 255).detach().mean((2, 3)))


def test_export_without_input_gradients_warns(tmp_path):
    batch = torch.export.Dim("batch")
    program = torch.export.export(_DetachingNet(), (torch.rand(2, 3, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "detach.pt2")

    with pytest.warns(UserWarning, match="no gradient reaches the input"):
        target = load_model(str(tmp_path / "detach.pt2"), ModelOptions())
    assert "no input gradients" in target.description


def test_weights_option_refused_for_export_archive(tmp_path, gap_net, images):
    torch.export.save(torch.export.export(gap_net, (images[:1],)), tmp_path / "m.pt2")
    with pytest.raises(UsageError, match="torch.export archive carries its own weights"):
        load_model(str(tmp_path / "m.pt2"), ModelOptions(weights="w.pt"))


# -- TorchScript --------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script/trace/save are deprecated
@pytest.mark.parametrize("compile_with", ["script", "trace"])
def test_torchscript_round_trip_has_no_hooks(tmp_path, gap_net, images, compile_with):
    scripted = torch.jit.script(gap_net) if compile_with == "script" else torch.jit.trace(gap_net, images[:1])
    path = tmp_path / "net.ts"
    torch.jit.save(scripted, str(path))

    target = load_model(str(path), ModelOptions())

    assert not target.hookable
    assert "TorchScript" in target.description
    torch.testing.assert_close(logits_of(target, images), gap_net(images))
    with target:
        target.probe(images[:1])
        assert target.layers == [] and "layers" not in target.capabilities
        x = images.clone().requires_grad_(True)
        target(x).sum().backward()
    assert x.grad.abs().sum() > 0


# -- pickles and state_dicts given as --model ----------------------------------------------------


def test_trusted_pickle_round_trip(tmp_path, gap_net, images):
    torch.save(gap_net, tmp_path / "full.pt")

    target = load_model(str(tmp_path / "full.pt"), ModelOptions(trust_pickle=True))

    assert isinstance(target.model, TinyGAPNet)
    assert "trusted" in target.description
    torch.testing.assert_close(logits_of(target, images), gap_net(images))


def test_pickle_refused_without_trust(tmp_path, gap_net):
    torch.save(gap_net, tmp_path / "full.pt")
    with pytest.raises(UsageError) as err:
        load_model(str(tmp_path / "full.pt"), ModelOptions())
    message = str(err.value)
    assert "unpickling runs arbitrary code" in message
    assert "pass --trust-pickle if you trust this file" in message
    assert "state_dict / TorchScript / torch.export archive" in message


@pytest.mark.parametrize("trust", [False, True])
def test_state_dict_given_as_model(tmp_path, gap_net, trust):
    torch.save(gap_net.state_dict(), tmp_path / "weights.pth")
    expected = r"holds a state_dict, not a model: give the architecture as --model file\.py:factory --weights PATH"
    with pytest.raises(UsageError, match=expected):
        load_model(str(tmp_path / "weights.pth"), ModelOptions(trust_pickle=trust))


# -- torchvision ---------------------------------------------------------------------------------


def test_torchvision_resnet18_with_five_classes(images):
    target = load_model("torchvision:resnet18", ModelOptions(num_classes=5))

    assert isinstance(target.model, torchvision.models.ResNet)
    assert target.mean_std[0] == pytest.approx(IMAGENET_MEAN) and target.mean_std[1] == pytest.approx(IMAGENET_STD)
    assert "random init, 5 classes" in target.description
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with target, torch.no_grad():
        logits = target(images)
        torch.testing.assert_close(logits, target.model((images - mean) / std))
    assert logits.shape == (3, 5)
    assert target.model.training  # built in training mode, and left so after the audit


def test_torchvision_googlenet_without_aux_heads():
    target = load_model("torchvision:googlenet", ModelOptions(num_classes=3))
    assert target.model.aux1 is None and target.model.aux_logits is False
    assert target.model.transform_input is False


def test_torchvision_googlenet_state_dict_with_aux_heads(tmp_path, images):
    trained = torchvision.models.googlenet(num_classes=3, aux_logits=True, init_weights=False).eval()
    torch.save(trained.state_dict(), tmp_path / "finetuned.pt")

    target = load_model("torchvision:googlenet", ModelOptions(num_classes=3, weights=str(tmp_path / "finetuned.pt")))

    assert target.model.aux1 is None
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(logits_of(target, x), trained((x - mean) / std))


def test_options_override_normalization():
    target = load_model("torchvision:resnet18", ModelOptions(num_classes=2, mean=(0.5,), std=(0.25,)))
    assert target.mean_std == ((0.5,), (0.25,))


def test_bad_normalization_is_a_usage_error():
    expected = r"bad normalization mean=None std=\(0\.0, 1\.0, 1\.0\); expected 1 or 3 values each, std > 0"
    with pytest.raises(UsageError, match=expected):
        load_model("auditkit.testing.models:tiny_factory", ModelOptions(std=(0.0, 1.0, 1.0)))
    with pytest.raises(UsageError, match="device 'gpu' is not a torch device; expected cpu, cuda or cuda:N"):
        load_model("auditkit.testing.models:tiny_factory", ModelOptions(device="gpu"))


def test_whole_model_given_as_weights_is_refused(tmp_path, gap_net):
    torch.save(gap_net, tmp_path / "full.pt")
    expected = "holds pickled Python objects beyond tensors .* runs arbitrary code; expected a state_dict"
    with pytest.raises(UsageError, match=expected):
        load_model("auditkit.testing.models:tiny_factory", ModelOptions(weights=str(tmp_path / "full.pt")))


def test_pretrained_weights_from_weights_dir(tmp_path, offline_hub):
    torch.manual_seed(1)
    original = torchvision.models.resnet18()
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save(original.state_dict(), weights_dir / RESNET18_CHECKPOINT)

    # num_classes 208: the data of a few ImageNet-index folders (0001/, 0207/) keeps the 1000 classes
    for spec, classes in (("torchvision:resnet18?weights=IMAGENET1K_V1", None), ("torchvision:resnet18?weights=DEFAULT", 208)):
        target = load_model(spec, ModelOptions(weights_dir=str(weights_dir), num_classes=classes))
        torch.testing.assert_close(target.model.fc.weight, original.fc.weight)
        torch.testing.assert_close(target.model.layer1[0].bn1.running_var, original.layer1[0].bn1.running_var)
        # From the weights' transforms(): the same values as the default, for these weights.
        assert target.mean_std[0] == pytest.approx(IMAGENET_MEAN) and target.mean_std[1] == pytest.approx(IMAGENET_STD)
        assert "pretrained ResNet18_Weights.IMAGENET1K_V1" in target.description
        # Photographs reach it with the transform the weights were measured with.
        preprocess = target.expected_preprocess
        assert (preprocess.mode, preprocess.resize_size, preprocess.crop_size) == ("resize_center_crop", 256, (224, 224))
    assert not offline_hub.exists()  # nothing written to the hub cache


def test_pretrained_weights_from_hub_cache(offline_hub):
    (offline_hub / "checkpoints").mkdir(parents=True)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, offline_hub / "checkpoints" / RESNET18_CHECKPOINT)

    target = load_model("torchvision:resnet18?weights=ResNet18_Weights.IMAGENET1K_V1", ModelOptions())

    torch.testing.assert_close(target.model.conv1.weight, state["conv1.weight"])


def test_pretrained_googlenet_loads_aux_heads_then_drops_them(tmp_path, offline_hub):
    # torchvision's checkpoint holds the auxiliary heads and expects its input transform.
    full = torchvision.models.googlenet(aux_logits=True, init_weights=False, transform_input=True)
    torch.save(full.state_dict(), tmp_path / "googlenet-1378be20.pth")

    target = load_model("torchvision:googlenet?weights=IMAGENET1K_V1", ModelOptions(weights_dir=str(tmp_path)))

    assert target.model.aux1 is None and target.model.aux2 is None and target.model.transform_input
    torch.testing.assert_close(target.model.fc.weight, full.fc.weight)
    assert logits_of(target, torch.rand(1, 3, 32, 32)).shape == (1, 1000)


def test_pretrained_weights_absent_is_an_offline_error(tmp_path, offline_hub):
    (tmp_path / "w").mkdir()
    with pytest.raises(UsageError) as err:
        load_model("torchvision:resnet18?weights=IMAGENET1K_V1", ModelOptions(weights_dir=str(tmp_path / "w")))
    message = str(err.value)
    assert "offline" in message and "AUDITKIT_OFFLINE=1" in message
    assert f"put {offline_hub / 'checkpoints' / RESNET18_CHECKPOINT} in place" in message  # the exact file
    assert "--weights-dir" in message and "\n" not in message


def test_pretrained_weights_are_downloaded_into_the_hub_cache_the_way_torchvision_does(offline_hub, monkeypatch):
    monkeypatch.delenv("AUDITKIT_OFFLINE", raising=False)
    torch.manual_seed(3)
    published = torchvision.models.resnet18().state_dict()
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):  # stands for the network: nothing leaves the machine
        calls.append((url, dst, hash_prefix))
        torch.save(published, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    target = load_model("torchvision:resnet18?weights=IMAGENET1K_V1", ModelOptions())
    cached = offline_hub / "checkpoints" / RESNET18_CHECKPOINT
    # torchvision's own mechanism: its URL, into the hub cache, with the hash check asked for
    assert calls == [(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url, str(cached), "f37072fd")]
    torch.testing.assert_close(target.model.conv1.weight, published["conv1.weight"])
    load_model("torchvision:resnet18?weights=IMAGENET1K_V1", ModelOptions())
    assert len(calls) == 1  # the second time from the cache
    cached.unlink()

    monkeypatch.setenv("AUDITKIT_OFFLINE", "1")
    with pytest.raises(UsageError, match="offline"):
        load_model("torchvision:resnet18?weights=IMAGENET1K_V1", ModelOptions())
    with pytest.raises(UsageError, match="offline"):
        monkeypatch.delenv("AUDITKIT_OFFLINE")
        load_model("torchvision:resnet18?weights=IMAGENET1K_V1", ModelOptions(offline=True))
    assert len(calls) == 1  # offline never reached the download


def test_a_weights_dir_that_is_not_a_directory_is_a_usage_error(tmp_path, offline_hub):
    with pytest.raises(UsageError, match="--weights-dir .*missing' is not a directory"):
        load_model("torchvision:resnet18?weights=IMAGENET1K_V1", ModelOptions(weights_dir=str(tmp_path / "missing")))


def test_pretrained_weights_need_at_least_the_datas_classes(offline_hub):
    # fewer is fine (ImageNet-index folders of a few classes); more cannot be
    with pytest.raises(UsageError, match="has 1000 classes but the data has 1001"):
        load_model("torchvision:resnet18?weights=DEFAULT", ModelOptions(num_classes=1001))


def test_unknown_weights_name_lists_the_members():
    expected = r"ResNet18_Weights has no 'IMAGENET1K_V9'; expected DEFAULT or one of \['IMAGENET1K_V1'\]"
    with pytest.raises(UsageError, match=expected):
        load_model("torchvision:resnet18?weights=IMAGENET1K_V9", ModelOptions())


def test_unknown_torchvision_name_suggests_close_names():
    with pytest.raises(UsageError, match=r"torchvision has no classifier named 'resnet19'; did you mean .*resnet18"):
        load_model("torchvision:resnet19", ModelOptions())


def test_torchvision_detection_model_is_not_a_classifier():
    with pytest.raises(UsageError, match="fasterrcnn_resnet50_fpn is not an image classifier"):
        load_model("torchvision:fasterrcnn_resnet50_fpn", ModelOptions())


# -- other forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("model.onnx", "model 'model.onnx': no such file; expected an ONNX model file"),
        ("http://127.0.0.1:9#retries=0&timeout=0.5", "cannot reach the endpoint"),
    ],
)
def test_black_box_specs_load_in_the_core_without_the_transfer_plugin(spec, expected):
    """ONNX files and HTTP endpoints are model formats of auditkit.models: loading them needs no
    plugin (``-p no:transfer`` removes only the transfer.proxy check)."""
    with pytest.raises(UsageError, match=re.escape(expected)):
        load_model(spec, ModelOptions())


def test_missing_model_file_lists_the_forms(tmp_path):
    with pytest.raises(UsageError) as err:
        load_model(str(tmp_path / "model.pt"), ModelOptions())
    assert "no such file" in str(err.value)
    assert describe_spec_forms() in str(err.value)


def test_unknown_file_format_lists_the_forms(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"definitely not a model" * 4)
    expected = "model.bin': not a PyTorch file; expected one of: torchvision:NAME"
    with pytest.raises(UsageError, match=expected):
        load_model(str(tmp_path / "model.bin"), ModelOptions())


def test_python_file_without_factory(tmp_path):
    module = write_module(tmp_path / "net.py", "def build():\n    pass\n")
    with pytest.raises(UsageError, match=r"a Python file needs the function that builds the model: .*net\.py:FACTORY"):
        load_model(str(module), ModelOptions())


def test_spec_forms_cover_every_form():
    forms = describe_spec_forms()
    assert len(SPEC_FORMS) == 6
    fragments = ("torchvision:NAME", "file.py:factory", "package.module:factory", ".pt2", "TorchScript")
    for fragment in (*fragments, "--trust-pickle", ".onnx", "http(s)://"):
        assert fragment in forms


# -- the tiny models themselves -----------------------------------------------------------------


def test_tiny_models_have_the_advertised_heads_and_outputs(images):
    torch.manual_seed(0)
    gap = Target(tiny_factory(num_classes=5))
    with gap:
        assert gap.probe(images).shape == (3, 5)
    assert gap.gap_head is not None and gap.gap_head.pool == "pool" and gap.gap_head.between == ("flatten",)

    fc = Target(TinyFCNet(num_classes=3, input_size=32))
    with fc:
        assert fc.probe(images).shape == (3, 3)
    assert fc.gap_head is None

    for net in (TupleOutputNet(), DictOutputNet()):
        target = Target(net)
        with target, torch.no_grad():
            torch.testing.assert_close(target(images), TinyGAPNet.forward(net.eval(), images))

    nan = Target(NaNNet())
    with nan, torch.no_grad():
        assert torch.isnan(nan(images)).all()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="multiple of 4"):
            TinyFCNet(input_size=30)


def test_random_initialization_follows_the_seed_and_leaves_the_callers_stream():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = load_model("torchvision:resnet18", ModelOptions(num_classes=4, seed=5))
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream did not move
    again = load_model("torchvision:resnet18", ModelOptions(num_classes=4, seed=5))
    other = load_model("torchvision:resnet18", ModelOptions(num_classes=4, seed=6))
    for (name, a), b, c in zip(first.model.state_dict().items(), again.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs for the same seed"
    assert not torch.equal(first.model.fc.weight, other.model.fc.weight)
