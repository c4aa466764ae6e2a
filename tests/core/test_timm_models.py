"""Tests for the ``timm:NAME`` model format: random models sized to the data, timm's pretrained
weights from a Hugging Face cache the tests seed themselves, offline errors, ``--weights``.
timm's tiny ``test_*`` architectures only; nothing is downloaded, every cache is in tmp_path."""
from __future__ import annotations

import sys

import pytest
import torch

from auditkit.errors import UsageError
from auditkit.models import factory
from auditkit.models.loaders import ModelOptions, load_model
from auditkit.weights import OfflineError

timm = pytest.importorskip("timm")
huggingface_hub = pytest.importorskip("huggingface_hub")  # timm's dependencies, as is safetensors
save_file = pytest.importorskip("safetensors.torch").save_file

REPO = "timm/test_vit.r160_in1k"  # test_vit's default (and only) pretrained tag
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def hub(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches in tmp_path, and every download refused."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("AUDITKIT_OFFLINE", "HF_HUB_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)

    def refuse(*args, **kwargs):
        pytest.fail(f"tried to download {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    for module in (timm.models._hub, timm.models._builder):  # timm's own references, should it try
        for attr in ("hf_hub_download", "download_url_to_file", "load_state_dict_from_url"):
            monkeypatch.setattr(module, attr, refuse, raising=False)
    return tmp_path / "hf" / "hub"


def published_state(seed: int = 7, arch: str = "test_vit", **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone().contiguous() for k, v in timm.create_model(arch, **kwargs).state_dict().items()}


def seed_cache(hub, state, repo: str = REPO, filename: str = "model.safetensors"):
    """The layout huggingface_hub writes: snapshots/<commit>/FILE and refs/main naming the commit."""
    repo_dir = hub / f"models--{repo.replace('/', '--')}"
    path = repo_dir / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True)
    if filename.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return path


def logits_of(target, x):
    with target, torch.no_grad():
        return target(x)


# -- random weights -------------------------------------------------------------------------------


def test_random_model_has_the_datas_classes_and_timms_normalization(hub):
    target = load_model("timm:test_vit3", ModelOptions(num_classes=4))

    assert isinstance(target.model, timm.models.VisionTransformer)
    assert target.description == "timm test_vit3, random init, 4 classes"
    assert target.mean_std == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # test_vit3's pretrained_cfg
    assert target.input_size == (3, 160, 160)  # this ViT takes one size only
    x = torch.rand(2, 3, 160, 160)
    torch.testing.assert_close(logits_of(target, x), target.model((x - 0.5) / 0.5))
    assert target.expected_preprocess is None
    assert not hub.exists()


def test_random_model_follows_the_seed_and_takes_any_size_when_timm_allows():
    first = load_model("timm:test_resnet", ModelOptions(num_classes=3, seed=1))
    again = load_model("timm:test_resnet", ModelOptions(num_classes=3, seed=1))
    assert first.input_size is None  # a CNN: the data keeps its size
    # test_vit's config says fixed, but it is built with dynamic_img_size
    assert load_model("timm:test_vit", ModelOptions(num_classes=3)).input_size is None
    for (name, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert logits_of(first, torch.rand(1, 3, 32, 32)).shape == (1, 3)


def test_the_timm_prefix_is_not_a_factory_spec():
    assert not factory.owns("timm:test_vit") and factory.owns("timm.models:create_model")


# -- one-line usage errors ------------------------------------------------------------------------


def test_unknown_name_suggests_close_names():
    with pytest.raises(UsageError, match=r"timm has no model named 'test_vitt'; did you mean test_vit\b"):
        load_model("timm:test_vitt", ModelOptions())


def test_tags_name_pretrained_weights():
    expected = r"timm has no pretrained tag 'in1k' for test_vit; expected one of test_vit\.r160_in1k$"
    with pytest.raises(UsageError, match=expected):
        load_model("timm:test_vit.in1k?pretrained=true", ModelOptions())
    with pytest.raises(UsageError, match=r"the tag \.r160_in1k names pretrained weights; add \?pretrained=true"):
        load_model("timm:test_vit.r160_in1k", ModelOptions())
    with pytest.raises(UsageError, match=r"unknown option 'pretrianed'; did you mean 'pretrained'\?"):
        load_model("timm:test_vit?pretrianed=true", ModelOptions())


def test_without_timm_the_spec_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` does when it is not installed
    with pytest.raises(UsageError) as err:
        load_model("timm:test_vit", ModelOptions())
    assert str(err.value) == "model 'timm:test_vit' needs timm: pip install 'auditkit[timm]'"


# -- pretrained weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("switch", ["option", "AUDITKIT_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_with_an_empty_cache_names_the_file_to_place(hub, monkeypatch, switch):
    if switch != "option":
        monkeypatch.setenv(switch, "1")
    with pytest.raises(OfflineError) as err:
        load_model("timm:test_vit?pretrained=true", ModelOptions(offline=switch == "option"))
    message = str(err.value)
    path = hub / "models--timm--test_vit.r160_in1k" / "snapshots" / "main" / "model.safetensors"
    assert err.value.path == path
    assert f"timm's test_vit.r160_in1k weights are not in the Hugging Face cache: put {path} in place" in message
    assert f"https://huggingface.co/{REPO}/resolve/main/model.safetensors" in message
    assert "--weights FILE" in message and "\n" not in message
    assert not hub.exists()  # nothing written


def test_the_placed_file_the_offline_error_names_is_found(hub):
    with pytest.raises(OfflineError) as err:
        load_model("timm:test_vit?pretrained=true", ModelOptions(offline=True))
    err.value.path.parent.mkdir(parents=True)
    save_file(published_state(), str(err.value.path))
    target = load_model("timm:test_vit?pretrained=true", ModelOptions(offline=True))
    assert str(err.value.path) in target.description
    # huggingface_hub reads the same place
    assert huggingface_hub.try_to_load_from_cache(REPO, "model.safetensors", cache_dir=hub) == str(err.value.path)


@pytest.mark.parametrize("spec", ["timm:test_vit?pretrained=true", "timm:test_vit.r160_in1k?pretrained=true"])
def test_pretrained_weights_come_from_a_seeded_cache_offline(hub, spec):
    state = published_state()
    path = seed_cache(hub, state)
    assert huggingface_hub.try_to_load_from_cache(REPO, "model.safetensors", cache_dir=hub) == str(path)

    target = load_model(spec, ModelOptions(num_classes=1000, offline=True))

    loaded = target.model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert target.description == f"timm test_vit.r160_in1k, pretrained, 1000 classes (from {path})"
    assert "state_dict" not in target.model.pretrained_cfg  # no second copy held
    # timm's evaluation transform for these weights: bicubic resize to 160 / 0.95, crop 160
    preprocess = target.expected_preprocess
    assert (preprocess.resize_size, preprocess.crop_size, preprocess.interpolation) == (168, (160, 160), "bicubic")
    assert target.mean_std == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_pretrained_bin_file_is_read_tensors_only(hub):
    state = published_state(seed=3)
    seed_cache(hub, state, filename="pytorch_model.bin")
    target = load_model("timm:test_vit?pretrained=true", ModelOptions())
    torch.testing.assert_close(target.model.head.weight, state["head.weight"])


def test_pretrained_weights_keep_their_classes_for_data_with_fewer(hub):
    # data of a few ImageNet classes (labels are ImageNet indices) keeps the 1000-class head
    seed_cache(hub, published_state())
    assert load_model("timm:test_vit?pretrained=true", ModelOptions(num_classes=5)).model.num_classes == 1000
    with pytest.raises(UsageError, match="pretrained timm test_vit.r160_in1k has 1000 classes but the data has 1001"):
        load_model("timm:test_vit?pretrained=true", ModelOptions(num_classes=1001))


def test_a_cached_file_of_another_architecture_is_said_in_one_line(hub):
    seed_cache(hub, published_state(arch="test_vit2"))
    with pytest.raises(UsageError) as err:
        load_model("timm:test_vit?pretrained=true", ModelOptions(offline=True))
    message = str(err.value)
    assert "does not fit model 'timm:test_vit?pretrained=true'" in message and "\n" not in message


def test_online_weights_are_downloaded_into_the_hugging_face_cache(hub, monkeypatch):
    state = published_state(seed=11)
    calls = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None):  # stands for the network
        calls.append((repo_id, filename, cache_dir))
        return str(seed_cache(hub, state, repo=repo_id, filename=filename))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    target = load_model("timm:test_vit?pretrained=true", ModelOptions())
    assert calls == [(REPO, "model.safetensors", str(hub))]
    torch.testing.assert_close(target.model.head.weight, state["head.weight"])
    load_model("timm:test_vit?pretrained=true", ModelOptions())
    assert len(calls) == 1  # the second time from the cache


# -- --weights FILE -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_loads_into_a_model_sized_to_the_data(tmp_path, suffix):
    state = published_state(seed=5, arch="test_convnext", num_classes=3)
    path = tmp_path / f"finetuned{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)

    target = load_model("timm:test_convnext", ModelOptions(num_classes=3, weights=str(path)))

    for key, value in state.items():
        assert torch.equal(target.model.state_dict()[key], value), key
    assert target.description == f"timm test_convnext, 3 classes, weights from {path}"


def test_weights_file_errors_are_one_line(tmp_path):
    torch.save(published_state(arch="test_convnext", num_classes=3), tmp_path / "w.pt")
    with pytest.raises(UsageError, match=r"its classifier has 3 outputs; is num_classes right\?"):
        load_model("timm:test_convnext", ModelOptions(num_classes=4, weights=str(tmp_path / "w.pt")))
    with pytest.raises(UsageError, match=r"either as \?pretrained=true or as --weights .*w\.pt, not both"):
        load_model("timm:test_convnext?pretrained=true", ModelOptions(weights=str(tmp_path / "w.pt")))
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UsageError, match="not a readable safetensors file"):
        load_model("timm:test_convnext", ModelOptions(weights=str(tmp_path / "bad.safetensors")))
