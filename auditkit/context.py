"""What a check sees while it runs on one model: :class:`AuditContext`, and the shared clean
forward pass (:class:`CleanPass`) it reads."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Iterator, TypeVar

import torch

from auditkit.batching import oom_backoff
from auditkit.check import Check, CheckResult
from auditkit.data.base import AuditData, Batch
from auditkit.distributed import SINGLE, World, batch_seed, owned_indices
from auditkit.errors import TargetError
from auditkit.heap import release_free_heap
from auditkit.records import ImageRows
from auditkit.seeding import check_seed, seed_everything

if TYPE_CHECKING:
    from auditkit.session import AuditSession

T = TypeVar("T")


class CleanPass:
    """The clean forward pass over the evaluation images, computed once per model and shared
    by every check.

    :ivar score_kind: ``"logits"`` (white-box models, and never anything else for them),
        ``"probabilities"`` (a black box that answers scores: ONNX files, HTTP endpoints and
        callables answer probabilities, see ``BlackBoxTarget``), or None with no scores.
    :ivar preds: the predicted class per image, long ``[N]``.
    :ivar labels: the true class per image, long ``[N]``, or None for unlabelled data.

    The scores per class (``[N, K]``) are a per-image record (:class:`~auditkit.records.ImageRows`):
    in memory up to a limit (64 MiB, ``AUDITKIT_RECORDS_IN_MEMORY``), beyond it in a
    temporary file. Read the rows of a batch with :meth:`scores_at`, :meth:`logits_at`,
    :meth:`probs_at` or :meth:`log_probs_at` (``batch.index``); :attr:`scores`,
    :attr:`logits`, :attr:`probs` and :attr:`log_probs` give all ``N`` rows at once, which
    for a large evaluation set means reading them all into memory.

    Read logits only in checks that require white-box models (they raise for a black box, so
    probabilities are never mistaken for logits); probabilities and log-probabilities are
    right for both kinds.
    """

    def __init__(
        self,
        scores: torch.Tensor | ImageRows | None,
        preds: torch.Tensor,
        labels: torch.Tensor | None,
        score_kind: str | None = "logits",
    ):
        if score_kind not in ("logits", "probabilities", None) or (score_kind is None) != (scores is None):
            raise ValueError(f"score_kind must be 'logits' or 'probabilities' with scores, None without; got {score_kind!r}")
        self._scores = scores
        self.score_kind = score_kind
        self.preds = preds
        self.labels = labels
        self._constant: tuple[int, int] | None | bool = False  # False: not worked out yet

    @property
    def num_classes(self) -> int | None:
        """K, the number of scores per image; None for a model that answers labels only."""
        if self._scores is None:
            return None
        if isinstance(self._scores, ImageRows):
            return int(self._scores.row_shape[0]) if self._scores.row_shape else 0
        return int(self._scores.shape[1])

    @property
    def scores(self) -> torch.Tensor | None:
        """What the model answered per class for every image, ``[N, K]`` on the device (their
        kind is :attr:`score_kind`), or None for a black box that answers labels only."""
        if isinstance(self._scores, ImageRows):
            return self._scores.full()
        return self._scores

    def scores_at(self, index: torch.Tensor) -> torch.Tensor:
        """The scores ``[B, K]`` of the images at evaluation positions ``index`` (long [B],
        ``batch.index``), on the device. TargetError for a model that answers labels only."""
        if self._scores is None:
            raise TargetError("this model answers labels only: no scores")
        if isinstance(self._scores, ImageRows):
            return self._scores.read(index)
        return self._scores[index.to(self._scores.device)]

    def _logits_kind(self) -> None:
        if self.score_kind != "logits":
            what = "labels only" if self._scores is None else "probabilities, not logits"
            raise TargetError(f"this model answers {what}: read CleanPass.scores, .probs or .log_probs")

    @property
    def logits(self) -> torch.Tensor:
        """The logits ``[N, K]``; TargetError when the model answered probabilities or labels."""
        self._logits_kind()
        return self.scores  # type: ignore[return-value]

    def logits_at(self, index: torch.Tensor) -> torch.Tensor:
        """The logits ``[B, K]`` of the images at positions ``index``; TargetError as :attr:`logits`."""
        self._logits_kind()
        return self.scores_at(index)

    @property
    def probs(self) -> torch.Tensor:
        """Class probabilities ``[N, K]`` (float32): softmax of the logits, or the black box's
        own probabilities. TargetError for a model that answers labels only."""
        if self._scores is None:
            raise TargetError("this model answers labels only: no scores")
        return self._probs(self.scores)  # type: ignore[arg-type]

    def probs_at(self, index: torch.Tensor) -> torch.Tensor:
        """:attr:`probs` of the images at positions ``index``: ``[B, K]`` float32."""
        return self._probs(self.scores_at(index))

    @property
    def log_probs(self) -> torch.Tensor:
        """Log class probabilities ``[N, K]`` (float32), for both kinds of scores: these are
        logits up to a per-image constant, so ``softmax(log_probs / T)`` is the temperature-
        scaled distribution whatever the model answered. A probability of exactly 0 gives
        the log of the smallest normal float32, not -inf."""
        if self._scores is None:
            raise TargetError("this model answers labels only: no scores")
        return self._log_probs(self.scores)  # type: ignore[arg-type]

    def log_probs_at(self, index: torch.Tensor) -> torch.Tensor:
        """:attr:`log_probs` of the images at positions ``index``: ``[B, K]`` float32."""
        return self._log_probs(self.scores_at(index))

    def _probs(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.float() if self.score_kind == "probabilities" else torch.softmax(scores.float(), dim=1)

    def _log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        if self.score_kind == "logits":
            return torch.log_softmax(scores.float(), dim=1)
        return scores.float().clamp_min(torch.finfo(torch.float32).tiny).log()

    @property
    def correct(self) -> torch.Tensor:
        if self.labels is None:
            raise TargetError("the data has no labels")
        return self.preds == self.labels

    def __len__(self) -> int:
        return int(self.preds.shape[0])

    @property
    def constant(self) -> tuple[int, int] | None:
        """``(class, n_images)`` when the model predicts one class for every one of the
        ``n_images`` >= 2 evaluation images, else None. Not when every label is that class
        too: a model right on every image of one-class data predicts one class as well, and
        the clean pass cannot tell it from a constant one. Worked out once and kept: every
        result of this model asks."""
        if self._constant is False:
            n = len(self)
            first = self.preds[:1]
            constant = n >= 2 and bool((self.preds == first).all())
            if constant and self.labels is not None and bool((self.labels == first).all()):
                constant = False
            self._constant = (int(first), n) if constant else None
        return self._constant  # type: ignore[return-value]


class AuditContext:
    """What a check may use while it runs on one model.

    :ivar target: the model under audit (``Target`` or ``BlackBoxTarget``), in eval mode on
        :attr:`device`. Its ``role`` is "target" or "baseline".
    :ivar data: the ``AuditData``; :meth:`batches` yields it on the device.
    :ivar settings: the check's settings (its ``Settings`` dataclass, config applied).
    :ivar generator: a ``torch.Generator`` on the CPU seeded for this check and model.
    :ivar results: results so far in this session (for checks that compare, e.g. masking
        flags that look at transfer results).
    :ivar world: the processes of this audit (:class:`~auditkit.distributed.World`; one,
        unless torchrun started several): a check that ``shards`` merges its tallies through it.
    """

    def __init__(self, session: "AuditSession", target: Any, check: Check):
        self.session = session
        self.target = target
        self.check = check
        self.data: AuditData = session.data
        self.settings = check.settings
        self.config = session.config
        self.device: torch.device = session.device
        self.seed = check_seed(session.config.seed, check.id, target.name)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.batch_size = session.config.batch_size
        self.results: list[CheckResult] = session.results
        # a check that does not shard runs on one process (rank 0): it has no peers to merge with
        self.world: World = session.world if check.shards else SINGLE

    @property
    def model_name(self) -> str:
        return self.target.name

    @property
    def n_images(self) -> int:
        return self.session.n_eval

    @property
    def clean(self) -> CleanPass:
        """The shared clean forward pass of this model over the evaluation images."""
        return self.session.clean_pass(self.target)

    def batches(
        self, split: str = "eval", limit: int | None = None, batch_size: int | None = None, *, shard: bool | None = None,
        stream: int = 0,
    ) -> Iterator[Batch]:
        """Batches of ``split`` on the device; eval is capped at ``--max-images``.

        For a check that ``shards`` (or with ``shard=True``), the evaluation batches are this
        process's share (every batch with one process), and each batch first reseeds
        ``generator`` and the global generators from the check's seed and the batch's number,
        and the end of the loop from the seed alone (:func:`~auditkit.distributed.batch_seed`):
        what a batch draws, and what the check draws after the loop, is the same on any number
        of processes. ``shard=False`` gives every process the same batches, as for a probe of
        the first image that every process must make alike. ``stream``: a second loop over
        the same batches draws from other seeds with another number."""
        size = batch_size or self.batch_size
        if shard is None:
            shard = self.check.shards
        if split != "eval" or not shard:
            if split == "eval":
                limit = self.n_images if limit is None else min(limit, self.n_images)
            for batch in self.data.batches(split, size, limit=limit):
                release_free_heap()  # what the last batch freed (auditkit.heap)
                yield batch.to(self.device)
            return
        for batch in self.data.batches(split, size, indices=self.own_positions(limit, size)):
            release_free_heap()
            self._reseed(batch_seed(self.seed, int(batch.index[0]) // size, stream))
            yield batch.to(self.device)
        self._reseed(batch_seed(self.seed, -1, stream))

    def own_positions(self, limit: int | None = None, batch_size: int | None = None) -> list[int]:
        """The evaluation positions (in order) of this process's whole batches among the first
        ``limit`` images (capped at ``--max-images``): what :meth:`batches` yields to a check
        that shards, for reading the data without the device or the reseeding, as
        ``ctx.data.batches("eval", size, indices=ctx.own_positions())``. Every position with
        one process."""
        size = batch_size or self.batch_size
        limit = self.n_images if limit is None else min(limit, self.n_images)
        return owned_indices(self.world, limit, size)

    def n_batches(self, limit: int | None = None, batch_size: int | None = None) -> int:
        """How many evaluation batches :meth:`batches` yields with these arguments (for a
        progress bar's total)."""
        size = batch_size or self.batch_size
        limit = self.n_images if limit is None else min(limit, self.n_images)
        total = -(-limit // size)
        return self.world.n_batches(total) if self.check.shards else total

    def _reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)
        seed_everything(seed)

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "") -> Iterable:
        """Wrap a long loop in a progress bar (shown on a terminal, hidden with -q or in logs)."""
        return self.session.progress(
            iterable, total=total, desc=f"{self.target.name} {self.check.id} {desc}".strip(), sharded=self.check.shards
        )

    def announce(self, text: str) -> None:
        """Print one line on the terminal before this check's result line, as
        ``<model> :: <check id>: <text>`` (nothing with ``-q``, from the Python API with
        ``verbose=-1``, or without a terminal reporter). For what the user should know
        before a long run starts, such as its estimated cost; put anything the reports
        need in the result's details as well."""
        pm = getattr(self.session, "pm", None)
        reporter = pm.get_plugin("terminalreporter") if pm is not None else None
        if reporter is not None and getattr(reporter, "verbosity", 0) >= 0:
            reporter.write(f"{self.target.name} :: {self.check.id}: {text}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the target on ``images`` with batch-size backoff on CUDA OOM."""
        return oom_backoff(self.target, images)

    def shared(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value stored under ``key`` for this model, computed by ``compute()`` the first
        time any check asks, and kept until every check has run on this model.

        This is how checks share work beyond the clean pass (pytest's ``config.stash`` plays
        the same part): Grad-CAM maps of the evaluation images, say, computed by whichever
        Grad-CAM check runs first and read by the others. The key must name everything the
        value depends on (layer, explained classes, number of images...): two checks asking
        with the same key get the same object, so treat it as read-only. A ``compute`` that
        raises stores nothing; the next check to ask tries again.
        """
        stores = self.session.__dict__.setdefault("_shared", {})
        store = stores.setdefault(self.target.name, {})
        if key not in store:
            store[key] = compute()
        return store[key]

    def has_shared(self, key: Hashable) -> bool:
        """Whether a check of this model has already stored a value under ``key`` (see
        :meth:`shared`): what :meth:`Check.estimate` reads to leave out work it will not redo."""
        return key in self.session.__dict__.get("_shared", {}).get(self.target.name, {})

    def baseline_results(self) -> dict[str, CheckResult]:
        """This check's results on the baselines so far, by model name."""
        return {r.model: r for r in self.results if r.check == self.check.id and r.role == "baseline"}
