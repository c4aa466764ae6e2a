"""What the black-box formats (ONNX files, HTTP endpoints) share: reading a model's scores
as probabilities."""
from __future__ import annotations

import torch

SCORE_READINGS = ("auto", "probs", "logits")
_PROBABILITY_TOLERANCE = 1e-3


def scores_to_probabilities(scores: torch.Tensor, reading: str = "auto") -> torch.Tensor:
    """Rows of probabilities from a model's scores [B,K]. ``"auto"`` keeps rows that already
    are probabilities (every value in [0, 1], each row summing to 1 within 1e-3) and
    softmaxes the batch otherwise (logits); ``"probs"`` and ``"logits"`` force one reading."""
    if reading not in SCORE_READINGS:
        raise ValueError(f"reading must be one of {SCORE_READINGS}, got {reading!r}")
    if reading == "probs":
        return scores.float()
    if reading == "auto":
        in_range = bool(((scores >= -1e-6) & (scores <= 1 + 1e-6)).all())
        sums_to_one = bool(((scores.sum(dim=1) - 1).abs() <= _PROBABILITY_TOLERANCE).all())
        if in_range and sums_to_one:
            return scores.float().clamp(0.0, 1.0)
    return torch.softmax(scores.double(), dim=1).float()
