"""Target: DataParallel removed once, single-child wrappers seen through for structure only,
the user's wrapper left exactly as found, and state_dicts loaded the same way (issue #14, 3)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

from auditkit.models.loaders import ModelOptions, load_model
from auditkit.target import Target, find_body, unwrap_data_parallel
from auditkit.testing.models import TinyGAPNet


class Wrapper(nn.Module):
    """Holds the network as its one child and does work of its own in forward."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flip(-1)) * 2.0


class ScaledWrapper(Wrapper):
    """A wrapper with a parameter of its own: not a pure wrapper, so it is its own body."""

    def __init__(self, net: nn.Module):
        super().__init__(net)
        self.scale = nn.Parameter(torch.ones(1))


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": [id(p) for p in model.parameters()],
        "modes": {n: m.training for n, m in model.named_modules()},
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
        "grads": [p.grad for p in model.parameters()],
        "children": [(n, id(m)) for n, m in model.named_modules()],
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["params"] == before["params"] and after["children"] == before["children"]
    assert after["modes"] == before["modes"] and after["hooks"] == before["hooks"] == 0
    assert all(g is None for g in after["grads"])
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k


def test_data_parallel_is_removed_for_the_forward_and_the_names(images):
    torch.manual_seed(0)
    net = TinyGAPNet(num_classes=4)
    wrapped = nn.DataParallel(net).train()
    before = _snapshot(wrapped)
    target = Target(wrapped)

    assert target.model is net and target.body is net and target.body_name == ""
    assert target.unwrapped == ("DataParallel -> module",)
    with target:
        logits = target.probe(images)
        assert [layer.name for layer in target.layers][:2] == ["features.0", "features.1"]
        assert target.layer("features.0") is net.features[0]
        with pytest.raises(KeyError, match=r"similar: \['features.0'\]"):
            target.layer("module.features.0")
        with target.capture("features") as feats:
            target(images)
        assert feats["features"].shape == (3, 16, 16, 16)
    assert target.gap_head is not None and target.gap_head.pool == "pool" and target.gap_head.linear == "fc"
    assert target.describe()["unwrapped"] == ["DataParallel -> module"]
    torch.testing.assert_close(logits, _eval_logits(net, images))
    _assert_unchanged(wrapped, before)
    assert wrapped.module is net and wrapped.training and net.training


def _eval_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model = copy.deepcopy(net).eval()
    with torch.no_grad():
        return model(x)


def test_a_single_child_wrapper_is_seen_through_but_its_forward_still_runs(images):
    torch.manual_seed(0)
    net = TinyGAPNet(num_classes=4)
    wrapper = Wrapper(net)
    before = _snapshot(wrapper)
    target = Target(wrapper)

    assert target.model is wrapper  # the forward goes through the wrapper
    assert target.body is net and target.body_name == "net" and target.unwrapped == ("Wrapper.net",)
    with target:
        logits = target.probe(images)
    torch.testing.assert_close(logits, _eval_logits(wrapper, images))  # flipped and doubled
    assert target.gap_head is not None and target.gap_head.pool == "net.pool"
    assert target.describe()["unwrapped"] == ["Wrapper.net"]
    _assert_unchanged(wrapper, before)


def test_wrappers_nest_and_every_step_is_recorded():
    net = TinyGAPNet()
    target = Target(nn.DataParallel(Wrapper(nn.Sequential(net))))
    assert target.body is net and target.body_name == "net.0"
    assert target.unwrapped == ("DataParallel -> module", "Wrapper.net", "Sequential.0")
    assert dict(target.model.named_modules())[target.body_name] is net


def test_modules_that_are_not_pure_wrappers_are_their_own_body():
    scaled = ScaledWrapper(TinyGAPNet())
    assert find_body(scaled) == (scaled, "", ())
    one_layer = nn.Sequential(nn.Linear(3, 2))  # its one child is a layer, not a network
    assert find_body(one_layer) == (one_layer, "", ())
    net = TinyGAPNet()
    assert find_body(net) == (net, "", ()) and unwrap_data_parallel(net) == (net, ())
    assert Target(net).unwrapped == () and "unwrapped" not in Target(net).describe()


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available")
def test_distributed_data_parallel_is_removed_too(tmp_path, images):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        net = TinyGAPNet(num_classes=4)
        ddp = nn.parallel.DistributedDataParallel(net)
        target = Target(ddp)
        assert target.model is net and target.unwrapped == ("DistributedDataParallel -> module",)
        with target:
            target.probe(images)
        assert target.layers[0].name == "features.0" and ddp.module is net and ddp.training
    finally:
        dist.destroy_process_group()


# -- state_dicts: the same notion of DataParallel naming ------------------------------------------


HOLDER = """
class Holder(nn.Module):
    \"\"\"A network whose own child happens to be named ``module`` (DataParallel's name).\"\"\"

    def __init__(self, num_classes=4):
        super().__init__()
        self.module = TinyGAPNet(num_classes=num_classes)

    def forward(self, x):
        return self.module(x) * 0.5
"""


def _write_factory(tmp_path, body: str) -> str:
    path = tmp_path / "netdef.py"
    path.write_text(
        "import torch\nfrom torch import nn\nfrom auditkit.testing.models import TinyGAPNet\n" + HOLDER + "\n\n" + body
    )
    return str(path)


def test_a_plain_state_dict_loads_into_a_data_parallel_model(tmp_path, images):
    torch.manual_seed(1)
    reference = TinyGAPNet(num_classes=4)
    torch.save(reference.state_dict(), tmp_path / "plain.pt")
    factory = _write_factory(tmp_path, "def build(num_classes=4):\n    return nn.DataParallel(TinyGAPNet(num_classes))\n")

    target = load_model(f"{factory}:build", ModelOptions(weights=str(tmp_path / "plain.pt"), num_classes=4))

    assert target.unwrapped == ("DataParallel -> module",)
    with target, torch.no_grad():
        torch.testing.assert_close(target(images), _eval_logits(reference, images))


def test_a_network_with_a_child_named_module_keeps_its_keys(tmp_path, images):
    factory = _write_factory(tmp_path, "def build(num_classes=4):\n    return Holder(num_classes)\n")
    torch.manual_seed(2)
    reference = load_model(f"{factory}:build", ModelOptions(num_classes=4)).model
    torch.manual_seed(3)  # the loaded models start from other weights
    for name, state in (
        ("own.pt", reference.state_dict()),  # every key "module.…", as DataParallel's would be
        ("dp.pt", nn.DataParallel(reference).state_dict()),  # the same, "module."-prefixed once more
    ):
        torch.save(state, tmp_path / name)
        target = load_model(f"{factory}:build", ModelOptions(weights=str(tmp_path / name), num_classes=4))
        with target, torch.no_grad():
            torch.testing.assert_close(target(images), _eval_logits(reference, images))
