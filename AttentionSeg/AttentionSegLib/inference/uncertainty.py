"""Where a segmentation is likely wrong: a map on the input's grid, 0 (sure) to 1 (unsure).

Two methods, both from the one sliding-window pass that makes the segmentation (no extra network
runs beyond the mirrored copies that ``--tta`` already makes):

- ``entropy``: the entropy of the blended class probabilities (softmax of the window-blended, and
  with ``--tta`` mirror-averaged, logits; for one sigmoid output the binary entropy), divided by
  its maximum ``log K`` so that it lies in [0, 1]. It is high where the network hesitates between
  classes: boundaries, but also low-contrast or unusual tissue inside and outside the structures.
- ``tta``: the disagreement of the mirrored copies: the mean, over the copies, of the total
  variation distance between a copy's class probabilities and their mean (0 when all copies agree,
  at most 1). It needs ``--tta``: without mirrored copies there is nothing to disagree.

The default is ``entropy``, measured better on held-out hippocampus (``bench/bench_uncertainty.py``,
``bench/RESULTS.md``; a 10-minute UNet, 42 validation cases): error AUROC within 5 mm of the
structure 0.936 (0.939 with ``--tta``) against 0.927 for ``tta``, and on the predicted boundary
0.700 (0.711) against 0.665; the ``exp(-distance)`` map scores 0.906 and 0.500. Dropout at test time does not apply
(our networks have no dropout at inference), and an ensemble of checkpoints would need several
model files per model; both are left out.

The map is computed on the model's grid and brought to the input's grid by linear interpolation,
so it keeps the input's spacing, origin and direction, like the label image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from AttentionSegLib.io.image import Image

__all__ = [
    "UNCERTAINTY_METHODS",
    "DEFAULT_METHOD",
    "LIKELY_WRONG_THRESHOLD",
    "normalized_entropy",
    "mirror_spread",
    "to_grid",
    "likely_wrong_regions",
]

UNCERTAINTY_METHODS = ("entropy", "tta")
DEFAULT_METHOD = "entropy"
# A voxel is "likely wrong" from here: for two classes, entropy 0.5 is a probability of about 0.89
# for the chosen class; listing regions above it points the reader at the doubtful ones first.
LIKELY_WRONG_THRESHOLD = 0.5


def class_probabilities(logits: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """(K, ...) probabilities of (C, ...) logits: softmax over classes, or (1 - p, p) for one sigmoid output."""
    if sigmoid:
        p = torch.sigmoid(logits[:1].float())
        return torch.cat([1 - p, p])
    return torch.softmax(logits.float(), dim=0)


def normalized_entropy(logits: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """(...) entropy of the class probabilities of (C, ...) logits over ``log K``: 0 to 1."""
    probabilities = class_probabilities(logits, sigmoid)
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(dim=0)
    return (entropy / math.log(probabilities.shape[0])).clamp_(0.0, 1.0)


def mirror_spread(copies: list[torch.Tensor], sigmoid: bool) -> torch.Tensor:
    """(B, ...) disagreement of mirrored copies' (B, C, ...) logits (already flipped back): the mean
    total variation distance between each copy's probabilities and their mean, 0 to 1."""
    probabilities = [class_probabilities(c.movedim(1, 0), sigmoid).movedim(0, 1) for c in copies]
    mean = sum(probabilities) / len(probabilities)
    return sum(0.5 * (p - mean).abs().sum(dim=1) for p in probabilities) / len(probabilities)


def to_grid(values: torch.Tensor, shape) -> torch.Tensor:
    """A (...) map on the model's grid, linearly interpolated onto a grid of ``shape`` (the
    voxel-centre mapping of :func:`~AttentionSegLib.inference.window.logits_to_classes`)."""
    shape = tuple(int(v) for v in shape)
    if tuple(values.shape) == shape:
        return values.float()
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return F.interpolate(values.float()[None, None], size=shape, mode=mode, align_corners=False)[0, 0].clamp_(0, 1)


def likely_wrong_regions(uncertainty: Image, threshold: float = LIKELY_WRONG_THRESHOLD, limit: int = 20) -> list[dict]:
    """The connected regions of ``uncertainty >= threshold``, largest first: ``{"voxels",
    "volume_ml", "mean", "index" (an interior voxel), "ras" (mm)}`` (the "Likely wrong" table)."""
    from AttentionSegLib.evaluation.consensus import ras_of_index
    from AttentionSegLib.regions import connected_regions

    values = np.asarray(uncertainty.array)
    regions = connected_regions(values >= threshold, uncertainty.spacing_array_order, limit=limit, values=values)
    return [
        {key: region[key] for key in ("voxels", "volume_ml", "mean", "index")}
        | {"ras": ras_of_index(uncertainty, region["index"])}
        for region in regions
    ]
