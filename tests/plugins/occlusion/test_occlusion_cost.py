"""occlusion.localization's cost estimate against the image passes it makes (PassCounter), and
the work it reads instead of repeating: the unoccluded images' scores from the shared clean
pass, and the Grad-CAM maps the Grad-CAM checks and cam.consistency keep in the model's store,
both without changing a map or a metric."""
from __future__ import annotations

import math

import pytest
import torch

import auditkit
import auditkit_occlusion.localization as localization
from auditkit import AuditData, BlackBoxTarget, TensorSplit
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.passes import PassCounter
from gradcam_models import two_squares

CHECK = "occlusion.localization"
# 8 px windows tiling the 32 px images: 16 positions, 17 queries when the image is queried too
COARSE = {"window": 0.25, "stride": 1.0, "bootstrap_resamples": 200}
POSITIONS = 16


@pytest.fixture
def net() -> TinyGAPNet:
    torch.manual_seed(0)
    return TinyGAPNet(num_classes=3).eval()


def _audit(model, data, checks, settings=None, counted=None, **options):
    counter = PassCounter(counted if counted is not None else model)
    with counter:
        run = auditkit.audit(model, data, checks=checks, settings={CHECK: {**COARSE, **(settings or {})}},
                             plugins=[counter], **options)
    return {r.check: r for r in run.results}, counter


def _counted(counter, check=CHECK):
    return {"forward": counter.forward[check], "gradient": counter.gradient[check]}


def _unboxed(data: AuditData, rows: list[int]) -> AuditData:
    """``data`` with no box and an empty mask for the images at ``rows``."""
    split = data.eval
    boxes, masks = split.boxes.clone(), split.masks.clone()
    boxes[rows] = math.nan
    masks[rows] = False
    return AuditData("partly boxed", TensorSplit(split.images, split.labels, boxes, masks), num_classes=data.num_classes,
                     class_names=data.class_names, has_boxes=True, has_masks=True)


@pytest.mark.parametrize("n", [6, 12])
def test_estimate_is_the_passes_alone(net, n):
    """Alone on a white box, in one batch: every image's 16 occluded copies (its own score is
    the clean pass's), its Grad-CAM map, and the one-image probe that chooses the layer."""
    results, counter = _audit(net, two_squares(n=n), [CHECK])
    expected = {"forward": n * POSITIONS, "gradient": n + 1}
    assert results[CHECK].details["estimated_cost"] == _counted(counter) == expected
    assert results[CHECK].metrics["n_queries"] == n * POSITIONS
    assert results[CHECK].details["clean_scores_reused"] == n


def test_estimate_counts_the_images_queried_where_the_batch_is_not_the_clean_passs(net):
    # batches of 4 over 10 images, the first 9 explained: the second batch loses image 5 (no
    # box), the third is cut to image 8 by max_images; only the first is the clean pass's batch
    data = _unboxed(two_squares(n=10), [5])
    results, counter = _audit(net, data, [CHECK], {"max_images": 9}, batch_size=4)
    # scored: 4 (reused) + 3 + 1 queried with their own image
    expected = {"forward": 8 * POSITIONS + 4, "gradient": 8 + 1}
    assert results[CHECK].details["estimated_cost"] == _counted(counter) == expected
    assert results[CHECK].metrics["n_queries"] == 8 * POSITIONS + 4
    assert results[CHECK].details["clean_scores_reused"] == 4


def test_after_the_gradcam_checks_the_maps_and_the_layer_cost_nothing(net):
    """In the default order the Grad-CAM checks and cam.consistency have chosen the layer and
    stored every evaluation image's map: the agreement computes none, and says so before."""
    data = two_squares(n=8)
    results, counter = _audit(net, data, ["cam.consistency", "gradcam.localization", CHECK])
    assert results[CHECK].details["estimated_cost"] == _counted(counter) == {"forward": 8 * POSITIONS, "gradient": 0}
    assert results[CHECK].details["gradcam_agreement"]["layer"] == results["gradcam.localization"].details["layer"]


def test_on_a_black_box_the_clean_pass_saves_real_queries(net):
    data = two_squares(n=8)
    target = BlackBoxTarget(lambda x: torch.softmax(net(x), dim=1), name="target")
    results, counter = _audit(target, data, [CHECK], counted=net)
    assert results[CHECK].details["estimated_cost"] == _counted(counter) == {"forward": 8 * POSITIONS, "gradient": 0}
    assert target.queries == 8 + 8 * POSITIONS  # the clean pass, then the occluded copies only


def _no_reuse(monkeypatch):
    """Query every image and compute every Grad-CAM map, as before the check read them."""
    monkeypatch.setattr(localization, "_scored_by_clean_pass", lambda ctx, batch, scored: False)
    # a store of the check's own, which no other check fills
    monkeypatch.setattr(localization, "evaluation_maps_key", lambda *key: ("occlusion's own maps", *key))


@pytest.mark.parametrize("checks", [[CHECK], ["cam.consistency", "gradcam.localization", CHECK]], ids=["alone", "after_gradcam"])
def test_reading_the_clean_pass_and_the_shared_maps_changes_no_map_and_no_metric(net, map_recorder, monkeypatch, checks):
    data = two_squares(n=12)
    reused, counter = _audit(net, data, checks)
    reused_maps = map_recorder.take()["maps"]
    _no_reuse(monkeypatch)
    fresh, before = _audit(net, data, checks)
    fresh_maps = map_recorder.take()["maps"]

    assert torch.equal(reused_maps, fresh_maps)  # bit for bit
    a, b = reused[CHECK], fresh[CHECK]
    assert a.outcome == b.outcome
    assert {k: v for k, v in a.metrics.items() if k != "n_queries"} == {k: v for k, v in b.metrics.items() if k != "n_queries"}
    assert "gradcam_agreement" in a.metrics
    # what it saved: the 12 unoccluded images' queries, and (after the Grad-CAM checks) 12 maps
    assert b.metrics["n_queries"] - a.metrics["n_queries"] == 12
    assert before.forward[CHECK] - counter.forward[CHECK] == 12
    assert before.gradient[CHECK] - counter.gradient[CHECK] == (12 if len(checks) > 1 else 0)


class _CountedSplit(TensorSplit):
    """A TensorSplit that counts how often each image is read."""

    def __init__(self, split: TensorSplit):
        super().__init__(split.images, split.labels, split.boxes, split.masks)
        self.reads = torch.zeros(len(split), dtype=torch.long)

    def _batch(self, at, index):
        self.reads[index] += 1
        return super()._batch(at, index)


def test_the_plan_the_estimate_reads_is_the_runs(net):
    """The estimate reads every image to find the objects, and the check then takes its plan
    from the model's store: each image is read once for the plan, once for the occlusion and
    once by the clean pass, not a fourth time for a plan of the run's own."""
    data = two_squares(n=10)
    counted = _CountedSplit(data.eval)
    data = AuditData("counted", counted, num_classes=data.num_classes, class_names=data.class_names,
                     has_boxes=True, has_masks=True)
    results, _ = _audit(net, data, [CHECK], batch_size=4)
    assert results[CHECK].outcome.value in ("passed", "failed")
    # (the first images are also read by the probes before any check: the pixel check, the layer probe)
    assert counted.reads[2:].tolist() == [3] * 8


class _RankOneOfTwo:
    """What ``_plan`` reads of a context, as process 1 of 2 sees it."""

    own_positions = auditkit.toolkit.AuditContext.own_positions

    def __init__(self, data: AuditData, batch_size: int):
        from auditkit.distributed import World

        self.world, self.data, self.batch_size, self.n_images = World(rank=1, size=2), data, batch_size, len(data.eval)
        self.stored: dict = {}

    def has_shared(self, key):
        return key in self.stored

    def shared(self, key, compute):
        if key not in self.stored:
            self.stored[key] = compute()
        return self.stored[key]


def test_a_process_plans_only_its_own_batches():
    """Under torchrun, a process that did not estimate reads only its own batches for the plan
    (batches 1 and 3 of 0-3 for rank 1 of 2) and keeps nothing: a store holds whole plans only."""
    data = two_squares(n=14)
    counted = _CountedSplit(data.eval)
    data = AuditData("counted", counted, num_classes=data.num_classes, class_names=data.class_names,
                     has_boxes=True, has_masks=True)
    ctx = _RankOneOfTwo(data, batch_size=4)
    settings = localization.OcclusionLocalization.Settings(**COARSE)
    plan = localization._plan(ctx, settings, 14, shard=True)
    assert [b.number for b in plan] == [1, 3]
    assert [b.index.tolist() for b in plan] == [[4, 5, 6, 7], [12, 13]]
    assert counted.reads.tolist() == [0] * 4 + [1] * 4 + [0] * 4 + [1] * 2
    assert ctx.stored == {}
    # with the whole plan stored (rank 0 estimated), a process takes its own batches from it
    whole = localization._plan(_RankOneOfTwo(data, 4), settings, 14)
    ctx.stored[("occlusion.plan", 14, 4, settings.region, settings.window, settings.stride)] = whole
    assert [b.number for b in localization._plan(ctx, settings, 14, shard=True)] == [1, 3]
