""" "Next case": the dataset's case without labels where the model is least sure
(:mod:`~AttentionSegLib.inference.case_ranking`), loaded into the scene as volume nodes (one per
image channel, with the file's geometry) for the reader to correct."""

from __future__ import annotations

import os

__all__ = ["load_next_case"]


def load_next_case(scene, predictor, dataset_json: str | os.PathLike, seed: int = 0):
    """``(ranked case, its volume nodes)``: the top of the ranking of the dataset's cases without
    labels, loaded.

    Raises:
        AttentionSegError: the dataset has no case without labels.
    """
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image
    from AttentionSegLib.inference.case_ranking import next_case
    from AttentionSegLib.slicer.mrml import volume_node_from_image

    top, case = next_case(predictor, dataset_json, seed)
    image = read_case_image(case, load_dataset(dataset_json))
    channels = [image.channel(k) for k in range(image.n_channels)] if image.has_channels else [image]
    nodes = [volume_node_from_image(scene, c, f"{top.case_id}_{k:04d}") for k, c in enumerate(channels)]
    return top, nodes
