"""AttentionSeg engine: attention-based medical image segmentation without Qt or Slicer.

The Slicer modules ``AttentionSeg`` and ``AttentionSegTraining`` are thin layers over this
package; everything they do can also be done with the ``attentionseg`` command. Only
:mod:`AttentionSegLib.slicer.mrml` imports ``slicer``.
"""

__version__ = "0.1.0"
