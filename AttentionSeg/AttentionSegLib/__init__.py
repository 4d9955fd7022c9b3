"""AttentionSeg engine: attention-based medical image segmentation without Qt or Slicer.

Packages follow the pipeline's stages: ``io`` (images with geometry, segmentation files, atomic
writes), ``data`` (dataset definitions, preprocessing, corrections, phantoms), ``models`` (one
file per network), ``training`` (configuration schema, plan, trainer), ``inference`` (model file,
sliding-window segmenter, predictor, model store), ``interactive`` (click and box prompts, the
simulated user that clicks on errors, the per-object session with undo), ``evaluation`` (metrics,
reports, comparisons), ``serve`` (the HTTP server on Ray Serve, the client that uses a server's
models like files, and cohorts over a Ray cluster), ``cli`` (the ``attentionseg`` command),
``slicer`` (the MRML glue and the Qt-free logic of the two Slicer modules) and ``web`` (the
browser page, trame-slicer, over the same MRML and logic). Only ``slicer`` and ``web`` import
``slicer``, ``vtk`` or ``qt``. Shared by all: ``errors`` (the one-line errors a user can act on),
``devices`` (auto/cuda/cpu, mixed precision), ``progress`` (progress events as JSON lines),
``resources`` (memory available now) and ``regions`` (connected regions of a mask and their
interior-most voxel).

The Slicer modules ``AttentionSeg`` and ``AttentionSegTraining`` are thin layers over this
package; everything they do can also be done with the ``attentionseg`` command.
"""

__version__ = "0.1.0"
