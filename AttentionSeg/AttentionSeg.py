"""AttentionSeg: attention-based segmentation in 3D Slicer, and metrics against a reference.

Module, Widget and Test are thin: the work is done by the Qt-free engine ``AttentionSegLib``
(``SegmentationMetricsLogic`` and friends), which the command line ``attentionseg`` shares.
"""

from typing import Annotated

import slicer
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


class AttentionSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "AttentionSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["AttentionSeg developers"]
        self.parent.helpText = (
            "Segment volumes with attention-based networks (AXUNet, integrated-attention CNN, DANIE, "
            "Swin-NeXt, UNETR++, MONAI baselines) and measure per-label Dice, HD95, ASSD and NSD "
            "against a reference segmentation. See the extension's README for the command line."
        )
        self.parent.acknowledgementText = (
            "Metrics follow MONAI's definitions. Dataset conventions follow the Medical Segmentation "
            "Decathlon and nnU-Net v2."
        )


@parameterNodeWrapper
class AttentionSegParameterNode:
    segmentation: slicer.vtkMRMLSegmentationNode
    referenceSegmentation: slicer.vtkMRMLSegmentationNode
    referenceVolume: slicer.vtkMRMLScalarVolumeNode
    nsdToleranceMm: Annotated[float, WithinRange(0.0, 100.0)] = 1.0


class AttentionSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AttentionSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AttentionSegLogic()
        self.ui.computeMetricsButton.connect("clicked(bool)", self.onComputeMetrics)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def onComputeMetrics(self):
        with slicer.util.tryWithErrorDisplay("Failed to compute metrics.", waitCursor=True):
            tableNode, report = self.logic.computeMetrics(
                self.ui.segmentationSelector.currentNode(),
                self.ui.referenceSegmentationSelector.currentNode(),
                self.ui.referenceVolumeSelector.currentNode(),
                self.ui.nsdToleranceSpinBox.value,
            )
            self.ui.metricsTableView.setMRMLTableNode(tableNode)
            mean = report["mean"]
            self.ui.statusLabel.text = (
                f"Mean Dice {mean['dice']:.4f} over {report['n_labels_averaged']} labels; "
                f"mean HD95 {mean['hd95_mm']:.2f} mm over {report['n_averaged']['hd95_mm']} labels"
            )


class AttentionSegLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic; the work is in ``AttentionSegLib.logic`` (Qt-free, tested with slicer-core)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return AttentionSegParameterNode(super().getParameterNode())

    def computeMetrics(self, segmentationNode, referenceSegmentationNode, referenceVolumeNode, nsdToleranceMm=1.0):
        from AttentionSegLib.logic import SegmentationMetricsLogic

        return SegmentationMetricsLogic(slicer.mrmlScene).compute_metrics(
            segmentationNode, referenceSegmentationNode, referenceVolumeNode, nsdToleranceMm
        )


class AttentionSegTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_metrics_of_a_segmentation_against_itself_and_a_shifted_copy()

    def test_metrics_of_a_segmentation_against_itself_and_a_shifted_copy(self):
        import numpy as np

        from AttentionSegLib.image import Image
        from AttentionSegLib.mrml import segmentation_node_from_label_image, volume_node_from_image
        from AttentionSegLib.phantoms import ellipsoid_label_map

        labels = ellipsoid_label_map((20, 40, 40), 2, seed=3, spacing_mm=(2.0, 1.0, 1.0))
        image = Image(labels.astype(np.float32), spacing=(1.0, 1.0, 2.0))
        volume = volume_node_from_image(slicer.mrmlScene, image, "phantom")
        reference = segmentation_node_from_label_image(slicer.mrmlScene, image.with_array(labels), {1: "a", 2: "b"})
        shifted = segmentation_node_from_label_image(
            slicer.mrmlScene, image.with_array(np.roll(labels, 2, axis=2)), {1: "a", 2: "b"}
        )
        logic = AttentionSegLogic()
        _, same = logic.computeMetrics(reference, reference, volume)
        self.assertEqual([row["dice"] for row in same["labels"]], [1.0, 1.0])
        _, moved = logic.computeMetrics(shifted, reference, volume)
        self.assertTrue(all(row["dice"] < 1.0 for row in moved["labels"]))
        self.delayDisplay("AttentionSeg metrics test passed")
