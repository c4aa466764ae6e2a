"""auditkit.weights: torchvision's pretrained weights through the weights enums and the torch hub
cache, downloaded the way torchvision does, never when offline. Nothing here touches the network:
the hub's download function is replaced, and checkpoints are state_dicts the tests make."""
from __future__ import annotations

import pytest
import torch
import torchvision

from auditkit import weights
from auditkit.errors import UsageError

RESNET18 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture(autouse=True)
def _hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, *a, **k: pytest.fail(f"downloaded {url}"))


def _hub_file(tmp_path, member=RESNET18):
    return tmp_path / "torch" / "hub" / "checkpoints" / weights.checkpoint_name(member)


def test_names_and_places_follow_torchvision(tmp_path):
    assert weights.resolve("ResNet18_Weights.IMAGENET1K_V1") is RESNET18
    assert weights.checkpoint_name(RESNET18) == "resnet18-f37072fd.pth"
    assert weights.hub_checkpoint_dir() == tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(UsageError, match="not a torchvision weights enum member"):
        weights.resolve("ResNet18_Weights.NOPE")
    with pytest.raises(UsageError, match="--weights-dir 'nowhere' is not a directory"):
        weights.search_dirs("nowhere")


@pytest.mark.parametrize("value, offline", [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)])
def test_offline_from_the_environment(monkeypatch, value, offline):
    monkeypatch.setenv(weights.OFFLINE_ENV, value)
    assert weights.offline_requested() is offline
    assert weights.offline_requested(True) is True


def test_a_cached_checkpoint_is_read_without_the_network_even_offline(tmp_path):
    path = _hub_file(tmp_path)
    path.parent.mkdir(parents=True)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, path)
    loaded, where = weights.load_state_dict(RESNET18, offline=True)
    assert where == path and torch.equal(loaded["conv1.weight"], state["conv1.weight"])
    # a folder given with --weights-dir comes first
    (tmp_path / "mine").mkdir()
    torch.save({k: v + 1 for k, v in state.items()}, tmp_path / "mine" / path.name)
    loaded, where = weights.load_state_dict("ResNet18_Weights.IMAGENET1K_V1", weights_dir=str(tmp_path / "mine"))
    assert where == tmp_path / "mine" / path.name and torch.equal(loaded["conv1.weight"], state["conv1.weight"] + 1)


def test_a_failed_download_says_where_the_file_belongs(tmp_path, monkeypatch):
    def refused(url, dst, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refused)
    with pytest.raises(UsageError) as caught:
        weights.load_state_dict(RESNET18, what="model 'torchvision:resnet18'")
    assert str(caught.value).startswith(
        f"model 'torchvision:resnet18': could not download torchvision's ResNet18_Weights.IMAGENET1K_V1 from "
        f"{RESNET18.url} to {_hub_file(tmp_path)} (OSError: network unreachable)"
    )
