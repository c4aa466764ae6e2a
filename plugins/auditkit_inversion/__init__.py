"""Built-in check ``inversion.fidelity``: reconstruct images from each stage's features
(Mahendran & Vedaldi 2015) and measure how much of the input survives with depth."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

import auditkit
from auditkit import Artifact, Check, Cost, Findings, Threshold, UsageError
from auditkit.toolkit import AuditContext, Batch, oom_backoff, ssim_window

from auditkit_inversion.fidelity import psnr, ssim
from auditkit_inversion.grid import reconstruction_grid
from auditkit_inversion.inversion import Objective, invert
from auditkit_inversion.stages import Stage, anchor_stage, configured_stages, default_stages

__all__ = ["InversionFidelity"]


class InversionFidelity(Check):
    """Feature inversion per layer: how faithfully can the input be rebuilt from a layer's output?

    For each selected layer l and evaluation image x0, starting from mid-grey plus noise,

        x* = argmin_{x in [0,1]} ||phi_l(x) - phi_l(x0)||^2 / ||phi_l(x0)||^2
             + lambda_tv TV_beta(x) + lambda_alpha ||x - 0.5||_alpha^alpha

    by Adam on the pixels (cosine-decayed learning rate, projection onto [0,1]). The first
    layer inverted is the calibration anchor, the output of the model's first convolution
    (the stem's; see ``auditkit_inversion.stages.anchor_stage``), where the input is still
    almost all there: what the optimization reaches there is its own limit, and every other
    layer is read against it. Reported per layer (``<layer>.``): ``feature_rel_err`` =
    ||phi_l(x*) - phi_l(x0)|| / ||phi_l(x0)|| (how well the optimization matched the
    features: high means it failed, not that the layer forgot), ``psnr`` (dB) and ``ssim``
    between x* and x0, each the mean over images, and ``psnr_drop``, the anchor's PSNR less
    the layer's (dB the layer loses beyond the optimization's limit). Anchor: ``anchor_psnr``
    and ``anchor_ssim`` (also in ``details["anchor"]``). Summary: ``max_feature_rel_err``;
    ``max_feature_err_ratio``, the worst layer's feature error relative to that of its
    random start (each image's ratio, averaged); ``psnr_slope`` and ``ssim_slope``,
    least-squares slopes against depth (the fraction of the network's layers run, so
    comparable across architectures; negative when fidelity falls with depth);
    ``faithful_depth``, the depth of the deepest faithful layer, one whose reconstructions
    reach ``leak_ssim`` times the anchor's SSIM (the anchor's own depth at least; 0 when
    none is); ``leaking_layers``, the faithful deep layers (depth >= ``leak_min_depth``);
    ``n_images``; ``n_layers`` (the anchor included).

    Passes when the optimization converged at every layer: ``max_feature_err_ratio <= 0.5``,
    i.e. it at least halved its start's feature mismatch everywhere (measured: 0.002-0.22 on
    the tiny test models, 0.11 on a random-weight ResNet-18; 1.56 on a model whose pixel
    gradients vanish because it rounds its input). A leaking deep layer is reported as
    information (features released from it, as an embedding API or split inference would,
    give the input away); to gate on it, add the threshold ``leaking_layers = {max = 0}``.
    When the anchor itself reconstructs below ``anchor_min_psnr``, the message says that the
    optimization, not the layers, bounds the deeper reconstructions.
    """

    id = "inversion.fidelity"
    requires = ("white_box", "layers")
    headline = ("faithful_depth", "leaking_layers", "max_feature_err_ratio")
    quick_settings = {"max_images": 2, "steps": 40}
    # Per layer, named by the module: "<layer>.feature_rel_err", "<layer>.psnr", "<layer>.ssim",
    # "<layer>.psnr_drop" (the last and "anchor_*" only when there is an anchor).
    metrics = (
        "max_feature_rel_err", "max_feature_err_ratio", "psnr_slope", "ssim_slope", "faithful_depth",
        "leaking_layers", "anchor_psnr", "anchor_ssim", "n_images", "n_layers",
        "*.feature_rel_err", "*.psnr", "*.ssim", "*.psnr_drop",
    )
    # Lower fidelity at depth means less of the input leaks through released features.
    directions = {
        "faithful_depth": "lower", "leaking_layers": "lower", "max_feature_err_ratio": "lower",
        # what each layer keeps describes the architecture, not a better or worse model
        "max_feature_rel_err": None, "psnr_slope": None, "ssim_slope": None, "anchor_*": None, "n_*": None,
        "*.feature_rel_err": None, "*.psnr": None, "*.ssim": None, "*.psnr_drop": None,
    }
    thresholds = (Threshold("max_feature_err_ratio", "max", 0.5),)
    # The rule (did the optimization halve its start's feature mismatch at every layer) holds
    # or fails image by image: one reconstructed image is already evidence.
    min_sample = 1
    constant_sensitive = False  # inversion reads features, never predictions

    @dataclass
    class Settings:
        """Settings of ``inversion.fidelity`` (defaults measured on 2 CPU cores, 32 px images).

        :ivar layers: module names to invert; empty = the output of each stage, chosen
            automatically (see ``auditkit_inversion.stages.default_stages``) and listed in the
            result. Either way the anchor comes first (see ``anchor``).
        :ivar max_images: evaluation images reconstructed (the first ones). 4 keeps a tiny
            model's audit to seconds on a CPU; the fidelity numbers are means over them.
        :ivar steps: Adam steps. 200: on the tiny models 100 steps left the middle stage's SSIM
            at 0.60 where 200 reach 0.74; more changes little.
        :ivar lr: Adam's initial learning rate, in pixel units ([0,1] range), decayed to 0 by a
            cosine so the last steps refine. 0.05: with 0.02 the features matched worse after
            200 steps; 0.1 matched them a little better but reconstructed worse (AlexNet's
            first stage: PSNR 10.7 dB against 12.1).
        :ivar lambda_tv: weight of TV_beta (mean over pixels). 0.1: an identity layer still
            reconstructs at ~48 dB on 32 px images (~41 dB at 16 px; the blur it adds is
            negligible) while deeper layers gain much (a random TinyGAPNet's middle stage:
            SSIM 0.27 without TV, 0.74 with); 1.0 starts to blur (identity down to 33 dB).
        :ivar beta: TV exponent. 2, as Mahendran & Vedaldi: beta < 2 favours piecewise-constant
            images but its gradient is singular in flat regions.
        :ivar lambda_alpha: weight of the alpha-norm of the grey-centred image. 0.1: with alpha = 6
            the term is at most 0.1 / 64 = 0.0016 even for a saturated image, far below the data
            term, so it only decides pixels the features leave free (towards grey rather than
            the box bounds); the box itself is enforced by projection.
        :ivar alpha: alpha-norm exponent. 6, as Mahendran & Vedaldi (a soft box).
        :ivar init_noise: standard deviation of the Gaussian noise around mid-grey that each
            reconstruction starts from (drawn from the check's seeded generator).
        :ivar strategy: how layers share forward passes. ``auto`` stacks one copy of each image
            per layer in one batch and drops each copy once its layer is reached, where that
            reads exactly the same features, and falls back to ``sequential`` (one layer at a
            time) otherwise (a residual or branching connection around a selected layer, batch
            rows that interact). ``stacked`` runs every copy to the deepest layer. All give the
            same reconstructions up to floating point. Measured on 2 CPU cores (see
            benchmarks/README.md), drop costs 0.68x sequential on ResNet-18 (0.94x on one
            thread) and 0.57-0.72x for the whole check on TinyGAPNet, but 1.15x on a VGG-like
            CNN at 64 px, whose large batches run slower per image; set ``sequential`` there.
        :ivar grid_images: images shown in the PNG grid artifact.
        :ivar leak_ssim: SSIM at which a reconstruction counts as faithful. 0.7: between what a
            half-resolution copy of the image scores (2x2 block means, bilinear upsampled: 0.76
            on 16 px synthetic shapes) and a quarter-resolution one (0.49): a layer at 0.7
            gives away the image at about half its resolution.
        :ivar leak_min_depth: depth (fraction of the network's layers run) from which a layer
            counts as deep. 0.5: the second half of the network.
        :ivar anchor: also invert the calibration anchor, the output of the model's first
            convolution (see ``auditkit_inversion.stages.anchor_stage``; added in front of the
            automatic or configured layers unless it is one of them), and read every layer
            against it. It costs one more copy of each image, run only to that convolution
            but optimized at full resolution: measured in CPU time on one thread, 1.2-1.3x the
            check without it on the tiny test models and on a random ResNet-18 at 32 px.
            False reads each layer on its own, as if the optimization had no limit.
        :ivar anchor_min_psnr: PSNR (dB) below which the anchor's reconstruction is reported as
            the optimization's limit (the message says the deeper layers' losses are bounded
            by it). 30: with the defaults a first convolution that keeps the image reconstructs
            at 40-49 dB (identity: 41 dB at 16 px, 48 at 32 px; the tiny test models' first
            convolutions, random or trained, 41-49 dB; ResNet-18's strided conv1, random,
            43-45 dB at 32-64 px), while 10 steps reach ~23 dB and a model whose pixel
            gradients vanish ~14 dB.
        """

        layers: tuple[str, ...] = ()
        max_images: int = 4
        steps: int = 200
        lr: float = 0.05
        lambda_tv: float = 0.1
        beta: float = 2.0
        lambda_alpha: float = 0.1
        alpha: float = 6.0
        init_noise: float = 0.1
        strategy: Literal["auto", "drop", "stacked", "sequential"] = "auto"
        grid_images: int = 4
        leak_ssim: float = 0.7
        leak_min_depth: float = 0.5
        anchor: bool = True
        anchor_min_psnr: float = 30.0

        def __post_init__(self) -> None:
            problems = []
            for name in ("max_images", "steps"):
                if getattr(self, name) < 1:
                    problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
            for name in ("lr", "beta", "alpha"):
                if not getattr(self, name) > 0:
                    problems.append(f"{name} must be > 0, got {getattr(self, name)}")
            for name in ("lambda_tv", "lambda_alpha", "init_noise", "grid_images", "anchor_min_psnr"):
                if getattr(self, name) < 0:
                    problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
            if not 0 < self.leak_ssim <= 1:
                problems.append(f"leak_ssim must be in (0, 1], got {self.leak_ssim}")
            if not 0 <= self.leak_min_depth <= 1:
                problems.append(f"leak_min_depth must be in [0, 1], got {self.leak_min_depth}")
            if problems:
                raise UsageError("inversion.fidelity: " + "; ".join(problems))

    def run(self, ctx: AuditContext) -> Findings:
        s = self.settings
        target = ctx.target
        stages, notes, selection, anchor = self._select(target)
        if not stages:
            auditkit.skip(
                "no stage before the classifier head to invert"
                + (f" ({'; '.join(notes)})" if notes else "")
                + "; name the layers to invert in the setting 'layers'"
            )
        names = [st.name for st in stages]
        n_layers = len(stages)
        n_total = min(s.max_images, ctx.n_images)
        # ctx.batch_size bounds the copies in one forward; each image is copied once per layer.
        per_batch = max(1, ctx.batch_size // n_layers)
        objective = Objective(s.lambda_tv, s.beta, s.lambda_alpha, s.alpha)
        used: dict[str, str] = {}

        def reconstruct(images: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, ...]:
            inv = invert(
                target, images, names, start.transpose(0, 1), objective, steps=s.steps, lr=s.lr,
                strategy=s.strategy, progress=lambda it, total, desc: ctx.progress(it, total=total, desc=desc),
            )
            used.setdefault("strategy", inv.strategy)
            if inv.note:
                used.setdefault("note", inv.note)
            return inv.images.transpose(0, 1), inv.feature_rel_err.T, inv.start_rel_err.T

        sums = {k: torch.zeros(n_layers, dtype=torch.float64) for k in ("rel", "start", "ratio", "psnr", "ssim")}
        shown_x0: list[torch.Tensor] = []
        shown_rec: list[torch.Tensor] = []
        done = 0

        def invert_batch(batch: Batch) -> None:
            # A function of its own: what a batch makes is freed when it returns, not kept by
            # the loop's variables through the next batch's work.
            nonlocal done
            images = batch.images
            # One draw per image, so the starts do not depend on how the images are batched.
            noise = torch.stack([torch.randn((n_layers, *images.shape[1:]), generator=ctx.generator) for _ in images])
            start = (0.5 + s.init_noise * noise).clamp(0, 1).to(device=images.device, dtype=images.dtype)
            recon, rel, start_rel = oom_backoff(reconstruct, images, start)  # [B,L,3,H,W], [B,L], [B,L]
            with torch.no_grad():
                for layer in range(n_layers):
                    sums["psnr"][layer] += float(psnr(recon[:, layer], images).double().sum())
                    sums["ssim"][layer] += float(ssim(recon[:, layer], images).double().sum())
            sums["rel"] += rel.double().sum(0).cpu()
            sums["start"] += start_rel.double().sum(0).cpu()
            ratio = torch.where(start_rel > 0, rel / start_rel.clamp_min(1e-30), torch.zeros_like(rel))
            sums["ratio"] += ratio.double().sum(0).cpu()
            keep = max(0, s.grid_images - sum(len(x) for x in shown_x0))
            if keep:
                shown_x0.append(images[:keep].detach().cpu())
                shown_rec.append(recon[:keep].detach().cpu())
            done += images.shape[0]
            used.setdefault("image_size", tuple(images.shape[-2:]))

        for batch in ctx.batches(limit=n_total, batch_size=per_batch):
            invert_batch(batch)

        if done == 0:
            auditkit.skip("no evaluation images to invert")
        means = {k: (v / done).tolist() for k, v in sums.items()}
        return self._findings(ctx, stages, notes, selection, anchor, means, done, used, shown_x0, shown_rec)

    def estimate(self, ctx: AuditContext) -> Cost:
        """Per image inverted (``max_images`` at most): one forward for its reference features;
        2 per layer for the batching check (its copy alone, then stacked), whose features are
        also the starts' errors, or, without the check (``sequential``, or one layer), 1 per
        layer for those errors; 1 per layer for the final errors; and ``steps`` forward+backward
        passes per layer. Exact for ``auto`` whichever strategy it picks (the fallback to
        sequential reads the starts' errors from the check too); an upper bound when a
        configured ``drop`` or ``stacked`` is not exact (the check raises after its forwards)
        and when a CUDA out-of-memory error makes a batch start over (its passes repeat)."""
        s = self.settings
        stages = self._select(ctx.target)[0]
        n_images = min(s.max_images, ctx.n_images) if stages else 0
        n_layers = len(stages)
        checked = s.strategy != "sequential" and n_layers > 1
        return Cost(
            forward=n_images * (1 + (3 if checked else 2) * n_layers),
            gradient=n_images * n_layers * s.steps,
        )

    def _select(self, target: Any) -> tuple[list[Stage], list[str], str, dict[str, Any]]:
        """The layers to invert in call order (none when no stage was found: the check skips),
        notes on what was left out, how they were chosen, and the anchor (``{"layer",
        "source"}``; empty without one)."""
        if self.settings.layers:
            stages, notes, selection = configured_stages(self.settings.layers, target.layers), [], "configured"
        else:
            stages, notes = default_stages(target.model, target.layers, target.num_classes, getattr(target, "body_name", ""))
            selection = "automatic"
            if not stages:
                return [], notes, selection, {}
        if not self.settings.anchor:
            return stages, notes, selection, {}
        anchor, source = anchor_stage(target.layers)
        if anchor is None:
            notes.append("no anchor: the model has no convolution or other layer with a spatial output")
            return stages, notes, selection, {}
        if all(st.name != anchor.name for st in stages):  # a stage that is the anchor already serves as it
            stages = sorted([anchor, *stages], key=lambda st: st.order)
        return stages, notes, selection, {"layer": anchor.name, "source": source}

    def _findings(
        self,
        ctx: AuditContext,
        stages: list[Stage],
        notes: list[str],
        selection: str,
        anchor: dict[str, Any],
        means: dict[str, list[float]],
        n_images: int,
        used: dict[str, str],
        shown_x0: list[torch.Tensor],
        shown_rec: list[torch.Tensor],
    ) -> Findings:
        s = self.settings
        metrics: dict[str, float] = {}
        per_layer = []
        at = next((i for i, st in enumerate(stages) if st.name == anchor.get("layer")), None)
        for i, st in enumerate(stages):
            metrics[f"{st.name}.feature_rel_err"] = means["rel"][i]
            metrics[f"{st.name}.psnr"] = means["psnr"][i]
            metrics[f"{st.name}.ssim"] = means["ssim"][i]
            per_layer.append(
                {
                    "name": st.name,
                    "depth": st.depth,
                    "output_shape": list(st.output_shape[1:]),
                    "feature_rel_err": means["rel"][i],
                    "start_rel_err": means["start"][i],
                    "feature_err_ratio": means["ratio"][i],
                    "psnr": means["psnr"][i],
                    "ssim": means["ssim"][i],
                    "anchor": i == at,
                }
            )
            if at is not None:
                # What the layer loses beyond what the optimization already loses at the anchor.
                per_layer[-1]["psnr_drop"] = means["psnr"][at] - means["psnr"][i]
                metrics[f"{st.name}.psnr_drop"] = per_layer[-1]["psnr_drop"]
        if at is not None:
            anchor = {**anchor, **{k: per_layer[at][k] for k in ("depth", "psnr", "ssim", "feature_rel_err")}}
            metrics.update(anchor_psnr=anchor["psnr"], anchor_ssim=anchor["ssim"])
        # A layer is faithful when its reconstruction keeps leak_ssim of what the optimization
        # reaches at the anchor, so that the optimization's own limit is not counted as the
        # layer's loss. An anchor below leak_ssim is itself unfaithful: it is credited no
        # lower, or a failed optimization would make noise-level reconstructions "faithful".
        credited = min(max(anchor["ssim"], s.leak_ssim), 1.0) if at is not None else 1.0
        bar = s.leak_ssim * credited
        depths = [st.depth for st in stages]
        faithful = [p for p in per_layer if p["ssim"] >= bar]
        leaks = [p for p in faithful if p["depth"] >= s.leak_min_depth]
        metrics.update(
            max_feature_rel_err=max(means["rel"]),
            max_feature_err_ratio=max(means["ratio"]),
            psnr_slope=least_squares_slope(depths, means["psnr"]),
            ssim_slope=least_squares_slope(depths, means["ssim"]),
            faithful_depth=max((p["depth"] for p in faithful), default=0.0),
            leaking_layers=float(len(leaks)),
            n_images=float(n_images),
            n_layers=float(len(stages)),
        )

        chain = " -> ".join(f"{v:.2f}" for v in means["ssim"])
        chain_db = " -> ".join(f"{v:.1f}" for v in means["psnr"])
        message = (
            f"{n_images} image(s) inverted at {len(stages)} layer(s) ({selection}: {', '.join(st.name for st in stages)}): "
            f"SSIM {chain}, PSNR {chain_db} dB"
        )
        if at is not None:
            message += (
                f"; anchor {anchor['layer']} ({anchor['source']}): PSNR {anchor['psnr']:.1f} dB, SSIM {anchor['ssim']:.2f}"
            )
            if not anchor["psnr"] >= s.anchor_min_psnr:
                message += (
                    f"; the optimizer reaches only {anchor['psnr']:.1f} dB at the anchor {anchor['layer']}: deeper "
                    "layers' losses are bounded by it (read their PSNR drop below the anchor, not their PSNR)"
                )
        bound = next(
            (t.value for t in self.active_thresholds
             if t.metric == "max_feature_err_ratio" and t.op == "max" and t.baseline is None),
            None,
        )
        unconverged = [] if bound is None else [p for p in per_layer if p["feature_err_ratio"] > bound]
        if unconverged:
            message += "; not converged at " + ", ".join(
                f"{p['name']} (feature error {p['feature_err_ratio']:.2f} of the start's)" for p in unconverged
            )
        if leaks:
            message += "; info: deep layer(s) " + ", ".join(
                f"{p['name']} (depth {p['depth']:.2f}, SSIM {p['ssim']:.2f})" for p in leaks
            ) + " still reconstruct the input (SSIM >= " + (
                f"{bar:.2f}, {s.leak_ssim:g} of the anchor's {credited:.2f}" if at is not None else f"{s.leak_ssim:g}"
            ) + "): features released there leak it"

        artifacts = []
        if shown_x0:
            originals = torch.cat(shown_x0)
            recon = torch.cat(shown_rec).transpose(0, 1)
            artifacts.append(
                Artifact(
                    "reconstructions",
                    "image/png",
                    reconstruction_grid(originals, recon),
                    caption="rows: images; columns: the original, then its reconstruction from "
                    + ", ".join(st.name for st in stages),
                )
            )
        for key, label in (("ssim", "SSIM"), ("psnr", "PSNR (dB)")):
            artifacts.append(
                Artifact(
                    f"{key}_vs_depth",
                    "curve",
                    {"x": depths, "y": means[key], "label": label, "x_label": "depth (fraction of layers run)",
                     "names": [st.name for st in stages]},
                    caption=f"{label} of the reconstruction against the depth of the inverted layer",
                )
            )
        details: dict[str, Any] = {
            "layers": per_layer,
            "selection": selection,
            "strategy": used.get("strategy", s.strategy),
            "leaks": [p["name"] for p in leaks],
            "settings": dataclasses.asdict(s),
        }
        window = ssim_window(*used.pop("image_size"))  # the SSIM window these images got (smaller below 11 px)
        details["ssim_window"] = dataclasses.asdict(window) if window is not None else None
        if at is not None:
            details["anchor"] = anchor
        if notes:
            details["not_inverted"] = notes
        if "note" in used:
            details["strategy_note"] = used["note"]
        return Findings(metrics=metrics, message=message, artifacts=artifacts, details=details)


def least_squares_slope(x: list[float], y: list[float]) -> float:
    """Slope of the least-squares line through (x, y); NaN with fewer than two distinct x."""
    n = len(x)
    if n < 2:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        return math.nan
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx


@auditkit.hookimpl
def auditkit_collect_checks(config: Any) -> list[type[Check]]:
    return [InversionFidelity]


from auditkit_inversion.scorecard import auditkit_scorecard_sections  # noqa: E402,F401  (the scorecard section)
