"""Speed of transfer.proxy: proxy training throughput against a minimal hand-written training
loop, the cost of the HTTP protocol against calling the model in process, and the whole check
on a small model with its default settings.

    python benchmarks/bench_transfer.py                     # CPU, 32x32 images
    python benchmarks/bench_transfer.py --threads 1 --repeats 5
    python benchmarks/bench_transfer.py --device cuda --size 64

Training rows run the same proxy (the default ProxyResNet, same initial weights), the same
images and soft targets, the same batches and Adam steps; ``train_proxy`` also evaluates the
validation images after every epoch and keeps the best weights, which is its overhead.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import torch
import torch.nn.functional as F

import auditkit
from auditkit import BlackBoxTarget
from auditkit.data.loaders import load_data
from auditkit.testing.models import TinyGAPNet
from auditkit_transfer.endpoints import HTTPTarget, decode_request, encode_response
from auditkit_transfer.proxy import ProxyResNet, TrainingPlan, train_proxy


def minimal_training(proxy: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, epochs: int, batch: int, seed: int) -> None:
    """The loop a user would write: Adam, soft cross-entropy, shuffled batches."""
    optimizer = torch.optim.Adam(proxy.parameters(), lr=3e-3, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(seed)
    proxy.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).to(images.device)
        for start in range(0, len(images), batch):
            idx = order[start : start + batch]
            loss = -(targets[idx] * F.log_softmax(proxy(images[idx]), 1)).sum(1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def serve(model: torch.nn.Module) -> tuple[ThreadingHTTPServer, str]:
    """An auditkit.predict/1 endpoint for ``model`` on 127.0.0.1, built on the protocol helpers."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, *args):
            pass

        def do_POST(self):
            images = torch.from_numpy(decode_request(self.rfile.read(int(self.headers["Content-Length"]))).copy())
            with torch.no_grad():
                body = encode_response(scores=torch.softmax(model(images), 1).numpy())
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/predict"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--images", type=int, default=256, help="proxy training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = f"{device}" + ("" if device.type == "cuda" else f", {torch.get_num_threads()} thread(s)")

    data = load_data(f"synthetic:shapes?n=64&train={args.images}&size={args.size}&classes=4&seed=0")
    images = data.train.images.to(device)
    torch.manual_seed(0)
    target = TinyGAPNet(4).eval().to(device)
    with torch.no_grad():
        targets = torch.softmax(target(images) * 50, 1)  # sharpened: a random net's answers are flat

    # -- 1. proxy training throughput ------------------------------------------------------
    torch.manual_seed(1)
    initial = ProxyResNet(4, (3, args.size, args.size)).to(device)
    val = images[:32], targets[:32].argmax(1)
    plan = TrainingPlan(epochs=args.epochs, batch_size=args.batch, patience=0)
    rows: dict[str, list[float]] = {"train_proxy": [], "minimal loop": []}
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        rows["train_proxy"].append(timed(lambda: train_proxy(copy.deepcopy(initial), images, targets, plan, val_images=val[0], val_labels=val[1],
                                                              generator=torch.Generator().manual_seed(0)), device))
        rows["minimal loop"].append(timed(lambda: minimal_training(copy.deepcopy(initial), images, targets, args.epochs, args.batch, 0), device))
    work = args.epochs * len(images)
    print(f"proxy training: ProxyResNet width 16, {len(images)} images 3x{args.size}x{args.size}, batch {args.batch}, "
          f"{args.epochs} epochs, {where}, {args.repeats} repeats")
    for name, times in rows.items():
        print(f"  {name:14s} {work / min(times):8.0f} images/s best, {work / statistics.median(times):8.0f} median")
    print(f"  ratio train_proxy / minimal: min {min(rows['train_proxy']) / min(rows['minimal loop']):.3f}, "
          f"median {statistics.median(rows['train_proxy']) / statistics.median(rows['minimal loop']):.3f}")

    # -- 2. queries through the HTTP protocol against in process ---------------------------
    cpu_target = copy.deepcopy(target).cpu()
    server, url = serve(cpu_target)
    queries = data.train.images[:256]
    variants = {
        "callable (in process)": BlackBoxTarget(lambda x: torch.softmax(cpu_target(x), 1)),
        "HTTP base64": HTTPTarget(url, encoding="base64", batch_size=32),
        "HTTP list": HTTPTarget(url, encoding="list", batch_size=32),
    }
    speed: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, black_box in variants.items():
            speed[name].append(timed(lambda: black_box.query(queries), torch.device("cpu")))
    print(f"target queries: TinyGAPNet, {len(queries)} images 3x{args.size}x{args.size}, 32 per request, 127.0.0.1")
    for name, times in speed.items():
        print(f"  {name:22s} {len(queries) / min(times):8.0f} images/s best, {len(queries) / statistics.median(times):8.0f} median")
    server.shutdown()

    # -- 3. the whole check, default settings ----------------------------------------------
    audit_data = load_data(f"synthetic:shapes?n=64&size={args.size}&classes=4&seed=0")
    with torch.no_grad():  # the same random net, its head spread so it answers every class
        logits = target(audit_data.train.images.to(device))
        target.fc.weight.mul_(4 / logits.std(0)[:, None])
        target.fc.bias.copy_((target.fc.bias - logits.mean(0)) * 4 / logits.std(0))
    t0 = time.perf_counter()
    run = auditkit.audit(target, audit_data, checks=["transfer.proxy"], device=args.device)
    total = time.perf_counter() - t0
    result = run["transfer.proxy"]
    m, training = result.metrics, result.details["training"]
    print(f"transfer.proxy, default settings: TinyGAPNet target, {len(audit_data.eval)} eval images 3x{args.size}x{args.size}, {where}")
    print(f"  whole audit {total:.1f} s (check {result.duration_s:.1f} s): training {training['seconds']:.1f} s "
          f"at {training['images_per_second']:.0f} images/s, epochs {training['epochs']}, stopped {training['stopped']}")
    print(f"  queries {m['queries']:.0f}, attack queries {m['attack_queries']:.0f} on {m['n_images']:.0f} images, "
          f"agreement {m['proxy_agreement']:.3f}, transfer_success {m.get('transfer_success', float('nan')):.3f} "
          f"(noise {m.get('noise_success@linf_8/255', float('nan')):.3f}), outcome {result.outcome.value}")


if __name__ == "__main__":
    main()
