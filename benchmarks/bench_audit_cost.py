"""CPU time of a default audit against its floor: the distinct forward and backward passes it
needs, each costed at what a plain loop pays for it (issue #23, "Audit cost near the floor").

    python benchmarks/bench_audit_cost.py                          # resnet18 (random weights), shapes n=32 at 64 px, 1 thread, 3 rounds
    python benchmarks/bench_audit_cost.py --model tiny_gap         # TinyGAPNet (auditkit.testing.models)
    python benchmarks/bench_audit_cost.py --repeats 5 --threads 2

One process, three parts, nothing downloaded:

1. **Counted audit.** ``auditkit.audit(model, data, baselines=[], seed=0, device="cpu")``
   (all checks, default settings) with every forward pass of the audited model, of its copies
   (``gradcam.randomization`` deep-copies it; the copies carry the marker) and of
   ``transfer.proxy``'s own proxy network (counted apart: it is not the audited model) recorded
   image by image: the network's weights (a blake2b hash of parameters and buffers, recomputed
   only when a parameter's ``data_ptr`` or ``_version`` changes), the input row (blake2b of its
   bytes), whether a backward reached the input, or only the logits (Grad-CAM stops at a layer),
   and a signature of the gradient at the logits (the loss: each row scaled to max |g| = 1 and
   rounded to 1e-5), and, for a forward stopped inside the network (``inversion.fidelity``
   raises from a layer's hook), how far each row went (the last leaf module call it reached).
   A pass is **redundant** when an earlier pass anywhere in the audit already computed it: same
   weights, training flag and input bytes, at least as deep, and for a backward the same
   gradient signature (a backward to the input also covers one to a layer). The check that runs
   is known from an ``auditkit_run_check`` wrapper, as in ``tests/plugins/gradcam/test_gradcam_sharing.py``.
   This audit also warms the process up (imports, kernels, torch.optim's first step).
2. **Unit costs**, in a plain loop on the same model and image size, batched like the audit
   (``--batch``, the audit's default 64), median of ``--unit-repeats``: CPU seconds per image of
   a forward pass without gradients and of a forward pass plus the backward pass to the input
   (``torch.autograd.grad``, no weight gradients); the same for a forward stopped at each depth
   where the counted audit stopped one; and for the proxy, a forward, a forward plus the backward
   to the input, and a training forward plus ``loss.backward()`` (weight gradients). Also whole
   forwards and forward+backwards at the batch sizes the audit's calls had (powers of two).
3. **Timed audits** without the hashing instrumentation (it costs time): ``time.process_time()``
   (all threads; user + system, system also apart) and wall time of the whole ``auditkit.audit``
   call, and CPU time per check from the same wrapper. 2 and 3 are interleaved in ``--repeats``
   rounds (unit costs, then an audit; medians), so that a change in the machine's speed moves
   both sides of the ratio alike.

Floor of a check = its distinct passes x their unit costs at ``--batch`` (a backward that stops
at a layer is costed as a forward: the floor stays a lower bound). Ratio = the check's CPU / its
floor. "Floor at own batch" costs the same whole passes at the batch size of their call instead:
what is left above it is work other than passes. The work outside checks (loading, data
generation, probe) and the shared clean pass have their own lines. ``OMP_WAIT_POLICY=PASSIVE`` is
set before torch loads, as the ``auditkit`` command does.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import copy
import datetime
import hashlib
import math
import platform
import resource
import statistics
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

import auditkit
from auditkit.data.loaders import load_data
from auditkit.testing.models import TinyGAPNet
from auditkit_transfer.proxy import ProxyResNet

SETUP = "(outside checks: load, data, probe)"
CLEAN = "(clean pass)"
MARK = "_bench_audit_cost_network"  # instance attribute: copy.deepcopy carries it to the copies
MODEL, PROXY = "model", "proxy"
# What a pass computed (Ledger.analyse says which covers which).
FWD, TO_LAYER, TO_INPUT, TRAIN = "fwd", "bwd to a layer", "bwd to input", "train step"


def build_model(name: str, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    if name == "resnet18":
        return torchvision.models.resnet18(num_classes=num_classes)
    if name == "tiny_gap":
        return TinyGAPNet(num_classes=num_classes)
    raise SystemExit(f"--model {name!r}: expected resnet18 or tiny_gap")


def digest(t: torch.Tensor) -> bytes:
    return hashlib.blake2b(t.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()


def is_leaf(module: nn.Module) -> bool:
    return not module._modules


def batch_bucket(n: int) -> int:
    """``n`` rounded to the nearest power of two (in log scale): the batch sizes measured."""
    return 2 ** round(math.log2(max(n, 1)))


# -- 1. the counted audit ----------------------------------------------------------------------


@dataclass
class Pass:
    """One call of a counted network on a batch: which check, which weights, each row's hash,
    and what autograd did with it afterwards (filled in by tensor hooks)."""

    label: str
    network: str
    weights: bytes
    training: bool
    rows: list[bytes]
    module: nn.Module | None
    leaf_rows: list[int] = field(default_factory=list)  # rows each leaf module call computed
    complete: bool = False
    input_grad: bool = False
    logit_grads: list[bytes] | None = None

    def kind(self) -> str:
        if self.logit_grads is not None and self.training:
            return TRAIN
        if self.input_grad:
            return TO_INPUT
        return TO_LAYER if self.logit_grads is not None else FWD

    def depths(self) -> list[int | None]:
        """Per row, the index of the last leaf module call it reached; None: the whole network.
        Rows leave a stopped forward from the front (inversion's ``drop`` strategy hands on
        ``output[block:]``), so row j reached every call that computed more than n - 1 - j rows."""
        if self.complete:
            return [None] * len(self.rows)
        n = len(self.rows)
        return [max((i for i, r in enumerate(self.leaf_rows) if r > n - 1 - j), default=-1) for j in range(n)]


class Ledger:
    """Records every pass of the marked networks (the audited model, its copies) and of the
    proxy, through global module hooks, and which check ran it (registered as a plugin)."""

    def __init__(self) -> None:
        self.label = SETUP
        self.passes: list[Pass] = []
        self.active: Pass | None = None
        self.proxy: nn.Module | None = None  # the last proxy seen, for its unit costs
        self._fingerprints: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._handles: list[Any] = []

    @staticmethod
    def network(module: nn.Module) -> str | None:
        if isinstance(module, ProxyResNet):
            return PROXY
        return module.__dict__.get(MARK)

    def fingerprint(self, module: nn.Module) -> bytes:
        tensors = [*module.parameters(), *module.buffers()]
        stamp = tuple((t.data_ptr(), t._version) for t in tensors)
        cached = self._fingerprints.get(module)
        if cached is None or cached[0] != stamp:
            h = hashlib.blake2b(digest_size=16)
            for t in tensors:
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            cached = (stamp, h.digest())
            self._fingerprints[module] = cached
        return cached[1]

    def pre_hook(self, module: nn.Module, args: tuple) -> None:
        network = self.network(module)
        if network is None or not args or not isinstance(args[0], torch.Tensor):
            return
        self.close()  # a pass still open was stopped by an exception (inversion's StopForward)
        x = args[0]
        p = Pass(self.label, network, self.fingerprint(module), module.training, [digest(r) for r in x.detach().cpu()], module)
        if network == PROXY:
            self.proxy = module
        if x.requires_grad and torch.is_grad_enabled():
            def input_reached(grad: torch.Tensor, p: Pass = p) -> None:
                p.input_grad = True
            x.register_hook(input_reached)
        self.passes.append(p)
        self.active = p

    def post_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        p = self.active
        if p is None:
            return
        if module is p.module:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                def logits_reached(grad: torch.Tensor, p: Pass = p) -> None:
                    g = grad.detach().float().flatten(1)
                    g = torch.round(g / g.abs().amax(1, keepdim=True).clamp_min(1e-30) * 1e5)
                    p.logit_grads = [digest(r) for r in g]
                output.register_hook(logits_reached)
            p.complete = True
            self.close()
        elif is_leaf(module) and isinstance(output, torch.Tensor) and output.ndim > 0:
            p.leaf_rows.append(int(output.shape[0]))

    def close(self) -> None:
        if self.active is not None:
            self.active.module = None  # do not keep randomization's copies alive
            self.active = None

    @auditkit.hookimpl(wrapper=True)
    def auditkit_run_check(self, check: Any, ctx: Any) -> Any:
        self.label = CLEAN
        with contextlib.suppress(Exception):  # a failing clean pass is the checks' to report
            _ = ctx.clean  # computed once, before the first check: its passes are the clean pass's
        self.close()
        self.label = check.id
        try:
            return (yield)
        finally:
            self.close()
            self.label = SETUP

    def __enter__(self) -> Ledger:
        self._handles = [register_module_forward_pre_hook(self.pre_hook), register_module_forward_hook(self.post_hook)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        for h in self._handles:
            h.remove()

    def analyse(self) -> tuple[dict[str, Counter], Counter, dict[int, int]]:
        """Per label, ``(network, kind, depth, distinct, batch)`` -> images, ``batch`` being the
        size of the call the image was in, rounded to a power of two; redundant images by
        ``(label, first label, kind)``; and the stop depths seen (leaf call index -> images).

        A row is redundant when an earlier row of the same network, weights, training flag and
        bytes went at least as deep and computed at least as much: any earlier pass covers a
        forward; a backward to a layer is covered by one to a layer or to the input with the same
        logit-gradient signature; a backward to the input by one to the input with the same
        signature; a training step is never covered (its weights change at every step)."""
        seen: dict[tuple, list[tuple[float, str, bytes | None, str]]] = defaultdict(list)
        counts: dict[str, Counter] = defaultdict(Counter)
        redundant: Counter = Counter()
        stops: Counter = Counter()
        covers = {FWD: {FWD, TO_LAYER, TO_INPUT, TRAIN}, TO_LAYER: {TO_LAYER, TO_INPUT}, TO_INPUT: {TO_INPUT}, TRAIN: set()}
        for p in self.passes:
            kind = p.kind()
            for j, (row, depth) in enumerate(zip(p.rows, p.depths())):
                sig = p.logit_grads[j] if p.logit_grads is not None else None
                deep = float("inf") if depth is None else depth
                key = (p.network, p.weights, p.training, row)
                first = next(
                    (lab for d, k, s, lab in seen[key] if d >= deep and k in covers[kind] and (kind == FWD or s == sig)),
                    None,
                )
                if depth is not None:
                    stops[depth] += 1
                counts[p.label][(p.network, kind, depth, first is None, batch_bucket(len(p.rows)))] += 1
                if first is None:
                    seen[key].append((deep, kind, sig, p.label))
                else:
                    redundant[(p.label, first, kind)] += 1
        return counts, redundant, dict(stops)


# -- 2. unit costs -------------------------------------------------------------------------------


class _Stop(BaseException):
    pass


def stopped_at(model: nn.Module, depth: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` run only up to its leaf module call number ``depth`` (None: the whole model),
    returning that call's output."""
    if depth is None:
        return model

    def run(x: torch.Tensor) -> torch.Tensor:
        calls, out = [0], []

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if calls[0] == depth:
                out.append(output)
                raise _Stop
            calls[0] += 1

        handles = [m.register_forward_hook(hook) for m in model.modules() if is_leaf(m)]
        try:
            model(x)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        return out[0]

    return run


def cpu_per_image(step: Callable[[], Any], batch: int, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        step()
        times.append(time.process_time() - t0)
    return statistics.median(times) / batch


def unit_costs(model: nn.Module, x: torch.Tensor, depths: list[int | None], repeats: int) -> dict[tuple[str, int | None], float]:
    """CPU seconds per image: forward without gradients, and forward plus backward to the input
    (``autograd.grad`` of the sum of squares of what the stopped forward returns, or of the
    cross-entropy of the logits), for the whole model and each stop depth."""
    model.eval()
    units = {}
    for depth in depths:
        run = stopped_at(model, depth)

        def forward(run: Callable = run) -> None:
            with torch.no_grad():
                run(x)

        def forward_backward(run: Callable = run, whole: bool = depth is None) -> None:
            xg = x.clone().requires_grad_(True)
            out = run(xg)
            loss = F.cross_entropy(out, torch.zeros(len(x), dtype=torch.long)) if whole else out.pow(2).sum()
            torch.autograd.grad(loss, xg)

        units[(FWD, depth)] = cpu_per_image(forward, len(x), repeats)
        units[(TO_INPUT, depth)] = cpu_per_image(forward_backward, len(x), repeats)
    return units


def unit_costs_by_batch(model: nn.Module, images: torch.Tensor, needed: set[tuple[str, int]], repeats: int) -> dict[tuple[str, int], float]:
    """CPU seconds per image of a whole forward (``FWD``) or forward plus backward to the input
    (``TO_INPUT``) in batches of each size in ``needed`` (the sizes the audit's calls used,
    rounded to powers of two); fewer repeats for the large batches."""
    model.eval()
    units = {}
    for kind, batch in sorted(needed, key=lambda kb: (kb[1], kb[0])):
        x = images.repeat(-(-batch // len(images)), 1, 1, 1)[:batch]
        if kind == FWD:
            def step(x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    model(x)
        else:
            def step(x: torch.Tensor = x) -> None:
                xg = x.clone().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(xg), torch.zeros(len(x), dtype=torch.long)), xg)
        units[(kind, batch)] = cpu_per_image(step, batch, repeats if batch <= 128 else max(2, repeats // 3))
    return units


def proxy_unit_costs(proxy: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    proxy = copy.deepcopy(proxy).requires_grad_(True)  # the check freezes it after training
    labels = torch.zeros(len(x), dtype=torch.long)

    def forward() -> None:
        proxy.eval()
        with torch.no_grad():
            proxy(x)

    def to_input() -> None:
        proxy.eval()
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(proxy(xg), labels), xg)

    def train_step() -> None:
        proxy.train()
        proxy.zero_grad(set_to_none=True)
        F.cross_entropy(proxy(x), labels).backward()

    return {
        FWD: cpu_per_image(forward, len(x), repeats),
        TO_INPUT: cpu_per_image(to_input, len(x), repeats),
        TRAIN: cpu_per_image(train_step, len(x), repeats),
    }


def model_kind(kind: str) -> str:
    """The unit a pass of the audited model is costed at: a backward that stopped at a layer as a
    forward (a lower bound), a training step (none in a default audit) as a backward to the input."""
    return {TO_LAYER: FWD, TRAIN: TO_INPUT}.get(kind, kind)


def floor_seconds(network: str, kind: str, depth: int | None, batch: int, units: dict, proxy_units: dict,
                  by_batch: dict | None = None) -> float:
    """The unit cost of one distinct image pass: at the unit loop's batch, or, with ``by_batch``,
    at the batch size its call had (whole passes of the audited model and its copies only)."""
    if network == PROXY:
        return proxy_units[FWD if kind == TO_LAYER else kind]
    if depth is not None and depth < 0:
        return 0.0  # stopped before its first leaf module
    if by_batch is not None and depth is None:
        return by_batch[(model_kind(kind), batch)]
    return units[(model_kind(kind), depth)]


# -- 3. the timed audit ------------------------------------------------------------------------------


def system_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


class CheckClock:
    """CPU time (all threads) per check and of the clean pass, and the part of it spent in the
    kernel (system time: page faults, mostly), from the same wrapper."""

    def __init__(self) -> None:
        self.cpu: Counter[str] = Counter()
        self.system: Counter[str] = Counter()
        self.order: list[str] = []

    @auditkit.hookimpl(wrapper=True)
    def auditkit_run_check(self, check: Any, ctx: Any) -> Any:
        t0, k0 = time.process_time(), system_seconds()
        with contextlib.suppress(Exception):
            _ = ctx.clean
        t1, k1 = time.process_time(), system_seconds()
        self.cpu[CLEAN] += t1 - t0
        self.system[CLEAN] += k1 - k0
        self.order.append(check.id)
        try:
            return (yield)
        finally:
            self.cpu[check.id] += time.process_time() - t1
            self.system[check.id] += system_seconds() - k1


def run_audit(model: nn.Module, args: argparse.Namespace, plugin: Any) -> tuple[Any, float, float]:
    t0, w0 = time.process_time(), time.perf_counter()
    run = auditkit.audit(model, args.data, baselines=[], seed=0, device="cpu", threads=args.threads, plugins=[plugin])
    return run, time.process_time() - t0, time.perf_counter() - w0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18", help="resnet18 (torchvision, random weights) or tiny_gap")
    parser.add_argument("--data", default="synthetic:shapes?n=32&size=64")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (audit and unit loop)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of unit costs and a timed audit (medians reported)")
    parser.add_argument("--unit-repeats", type=int, default=5, help="repeats of each unit cost per round")
    parser.add_argument("--batch", type=int, default=64, help="batch of the unit-cost loop (the audit's --batch-size default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    print(f"{datetime.date.today()}  {platform.node()}  torch {torch.__version__}  {args.threads} thread(s)  "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}  load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")

    data = load_data(args.data, seed=0)
    model = build_model(args.model, data.num_classes)
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()):,} parameters), data {args.data}")

    # 1. counted (also the warm-up)
    setattr(model, MARK, MODEL)
    ledger = Ledger()
    with ledger:
        counted_run, _, counted_wall = run_audit(model, args, ledger)
    del model.__dict__[MARK]
    counts, redundant, stops = ledger.analyse()
    print(f"counted audit: {counted_wall:.1f} s wall (with hashing), exit code {int(counted_run.exit_code)}")

    # 2 and 3, interleaved: each round measures the unit costs, then times an audit, so that a
    # change of the machine's speed during the run moves both sides of the ratio alike
    images = torch.cat([b.images for b in data.batches("eval", args.batch)])
    x = images.repeat(-(-args.batch // len(images)), 1, 1, 1)[: args.batch]
    depths: list[int | None] = [None, *sorted(d for d in stops if d >= 0)]
    needed = {
        (model_kind(kind), batch)
        for c in counts.values() for (net, kind, depth, distinct, batch) in c if net == MODEL and depth is None and distinct
    }
    rounds: dict[str, list[dict]] = defaultdict(list)
    cpu_total, wall_total, user_sys, per_label, per_label_sys = [], [], [], defaultdict(list), defaultdict(list)
    for _ in range(args.repeats):
        rounds["units"].append(unit_costs(model, x, depths, args.unit_repeats))
        rounds["proxy"].append(proxy_unit_costs(ledger.proxy, x, args.unit_repeats) if ledger.proxy is not None else {})
        rounds["by_batch"].append(unit_costs_by_batch(model, images, needed, args.unit_repeats))
        clock = CheckClock()
        before = resource.getrusage(resource.RUSAGE_SELF)
        run, cpu, wall = run_audit(model, args, clock)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu_total.append(cpu)
        wall_total.append(wall)
        user_sys.append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))
        per_label[SETUP].append(cpu - sum(clock.cpu.values()))
        per_label_sys[SETUP].append(after.ru_stime - before.ru_stime - sum(clock.system.values()))
        for label, seconds in clock.cpu.items():
            per_label[label].append(seconds)
            per_label_sys[label].append(clock.system[label])
    units, proxy_units, by_batch = (
        {k: statistics.median(r[k] for r in rounds[name]) for k in rounds[name][0]} for name in ("units", "proxy", "by_batch")
    )
    order = [SETUP, CLEAN, *clock.order]
    outcome = {r.check: r.outcome.value for r in run.results}
    wall_check = {r.check: r.duration_s for r in run.results}

    print(f"unit costs, batch {args.batch}, medians of {args.unit_repeats} per round, median over {args.repeats} round(s): "
          f"model forward {units[(FWD, None)] * 1e3:.2f} ms/image, forward+backward to input {units[(TO_INPUT, None)] * 1e3:.2f} "
          f"ms/image ({units[(TO_INPUT, None)] / units[(FWD, None)]:.2f}x)")
    for depth in depths[1:]:
        print(f"  stopped after leaf call {depth}: forward {units[(FWD, depth)] * 1e3:.2f}, forward+backward "
              f"{units[(TO_INPUT, depth)] * 1e3:.2f} ms/image ({stops[depth]} image passes stopped there)")
    if proxy_units:
        print(f"  proxy ({type(ledger.proxy).__name__}, {sum(p.numel() for p in ledger.proxy.parameters()):,} parameters): "
              f"forward {proxy_units[FWD] * 1e3:.3f}, forward+backward to input {proxy_units[TO_INPUT] * 1e3:.3f}, "
              f"training step {proxy_units[TRAIN] * 1e3:.3f} ms/image")
    for kind in (FWD, TO_INPUT):
        sizes = sorted(b for k, b in by_batch if k == kind)
        print(f"  {'forward' if kind == FWD else 'forward+backward to input'} by batch size (ms/image): "
              + ", ".join(f"{b}: {by_batch[(kind, b)] * 1e3:.2f}" for b in sizes))

    print()
    print(f"{'':24s} {'model/copies fwd':>17s} {'fwd+bwd to input':>17s} {'bwd to a layer':>15s} {'proxy passes':>14s}"
          f" {'batch':>6s} {'floor':>8s} {'CPU':>8s} {'sys':>6s} {'ratio':>6s} {'excess':>8s} {'floor at':>9s} {'ratio':>6s}  outcome, wall")
    print(f"{'':24s} {'all / distinct':>17s} {'all / distinct':>17s} {'all / distinct':>15s} {'all / distinct':>14s}"
          f" {'median':>6s} {'s':>8s} {'s':>8s} {'s':>6s} {'':>6s} {'s':>8s} {'own batch':>9s} {'':>6s}")
    total_floor = total_own = 0.0
    rows = []
    for label in order:
        c = counts.get(label, Counter())

        def pair(select: Callable[[str, str], bool], c: Counter = c) -> str:
            n = sum(v for (net, kind, _, _, _), v in c.items() if select(net, kind))
            d = sum(v for (net, kind, _, distinct, _), v in c.items() if select(net, kind) and distinct)
            return f"{n} / {d}"

        floor = sum(v * floor_seconds(net, kind, depth, batch, units, proxy_units) for (net, kind, depth, distinct, batch), v in c.items() if distinct)
        own = sum(v * floor_seconds(net, kind, depth, batch, units, proxy_units, by_batch) for (net, kind, depth, distinct, batch), v in c.items() if distinct)
        sizes = sorted(batch for (net, _, depth, _, batch), v in c.items() if net == MODEL for _ in range(v))
        median_batch = f"{sizes[len(sizes) // 2]:6d}" if sizes else f"{'-':>6s}"
        total_floor += floor
        total_own += own
        cpu = statistics.median(per_label[label]) if per_label[label] else 0.0
        system = statistics.median(per_label_sys[label]) if per_label_sys[label] else 0.0
        rows.append((label, cpu, floor))
        ratio = f"{cpu / floor:6.2f}" if floor > 0 else f"{'-':>6s}"
        ratio_own = f"{cpu / own:6.2f}" if own > 0 else f"{'-':>6s}"
        note = f"  {outcome[label]}, {wall_check[label]:.1f} s" if label in outcome else ""
        print(f"{label[:24]:24s} {pair(lambda n, k: n == MODEL and k == FWD):>17s} {pair(lambda n, k: n == MODEL and k in (TO_INPUT, TRAIN)):>17s}"
              f" {pair(lambda n, k: n == MODEL and k == TO_LAYER):>15s} {pair(lambda n, k: n == PROXY):>14s}"
              f" {median_batch} {floor:8.2f} {cpu:8.2f} {system:6.2f} {ratio} {cpu - floor:8.2f} {own:9.2f} {ratio_own}{note}")
    cpu, wall = statistics.median(cpu_total), statistics.median(wall_total)
    print(f"{'whole audit':24s} {'':17s} {'':17s} {'':15s} {'':14s} {'':6s} {total_floor:8.2f} {cpu:8.2f} {statistics.median(k for _, k in user_sys):6.2f} {cpu / total_floor:6.2f} "
          f"{cpu - total_floor:8.2f} {total_own:9.2f} {cpu / total_own:6.2f}"
          f"  wall {wall:.1f} s (CPU/wall {cpu / wall:.2f})")
    print(f"  timed audits: CPU {', '.join(f'{s:.1f}' for s in cpu_total)} s (user + system: "
          f"{', '.join(f'{u:.1f} + {k:.1f}' for u, k in user_sys)}); wall {', '.join(f'{s:.1f}' for s in wall_total)} s")

    print("\nlargest excess (CPU - floor):")
    for label, cpu_l, floor in sorted(rows, key=lambda r: r[1] - r[2], reverse=True)[:5]:
        print(f"  {label:24s} {cpu_l - floor:7.2f} s ({100 * (cpu_l - floor) / (cpu - total_floor):.0f}% of the audit's excess)")
    print("\nredundant image passes (label recomputes what first label computed):")
    for (label, first, kind), n in redundant.most_common():
        print(f"  {label:24s} {n:6d} x {kind:13s} first computed by {first}")
    partial = {label: sum(v for (net, kind, depth, _, _), v in c.items() if depth is not None) for label, c in counts.items()}
    for label, n in partial.items():
        if n:
            print(f"stopped forwards: {label}: {n} image passes stopped inside the network (costed at their depth)")
    load_end = os.getloadavg()
    print(f"\nload average at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")


if __name__ == "__main__":
    main()
