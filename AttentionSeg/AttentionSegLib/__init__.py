"""AttentionSeg engine: attention-based medical image segmentation without Qt or Slicer.

Packages follow the pipeline's stages: ``io`` (images with geometry, segmentation files, atomic
writes), ``data`` (dataset definitions, preprocessing, corrections, phantoms), ``models`` (one
file per network), ``training`` (configuration schema, plan, trainer), ``inference`` (model file,
sliding-window segmenter, predictor, model store), ``evaluation`` (metrics, reports, comparisons),
``cli`` (the ``attentionseg`` command) and ``slicer`` (the MRML glue and the Qt-free logic of the
two Slicer modules). Only ``slicer`` imports ``slicer``, ``vtk`` or ``qt``. Shared by all:
``errors`` (the one-line errors a user can act on), ``devices`` (auto/cuda/cpu, mixed precision)
and ``progress`` (progress events as JSON lines).

The Slicer modules ``AttentionSeg`` and ``AttentionSegTraining`` are thin layers over this
package; everything they do can also be done with the ``attentionseg`` command.
"""

__version__ = "0.1.0"
