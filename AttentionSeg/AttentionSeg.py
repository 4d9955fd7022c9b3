"""AttentionSeg: attention-based segmentation in 3D Slicer, model comparison, click-to-segment,
corrections that feed training, and metrics against a reference.

Module, Widget and Test are thin, and the Logic is a facade: the work is done by the Qt-free
classes of ``AttentionSegLib.slicer``, one per job (``SegmentLogic``, ``CompareLogic``, ``ClickLogic``,
``MetricsLogic``, ``CorrectionsLogic``; tested with slicer-core) over the engine the command line
``attentionseg`` shares. Long segmentations run in a separate process
(``AttentionSegLib.slicer.background``), so Slicer stays responsive and Cancel leaves the scene as it was.
"""

import os
import pathlib
from typing import Annotated

import qt
import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def requireDependencies():
    """First use: check the engine's packages and, after a confirmation, install what is missing
    (PyTorch through the PyTorch extension, the rest with pip); False when they are still missing."""
    from AttentionSegLib.slicer.dependencies_ui import ensure_dependencies

    return ensure_dependencies()


def showIn3D(segmentationNode):
    """The segments as surfaces in the 3D views (the engine's ``show_in_3d``)."""
    from AttentionSegLib.slicer.segments import show_in_3d

    show_in_3d(segmentationNode)


class AttentionSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "AttentionSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["AttentionSeg developers"]
        self.parent.helpText = (
            "Segment volumes with attention-based networks (AXUNet, integrated-attention CNN, DANIE, "
            "Swin-NeXt, UNETR++, MONAI baselines) trained by the AttentionSeg Training module: one model, or "
            "several side by side. Click on a structure: an interactive model segments the object under the "
            "clicks and refines it with each click or a box (with undo); an automatic model adds it with one "
            "window of the model (or removes it "
            "with a negative click), correct in the Segment Editor, and save the corrected case into the "
            "training dataset. Per-label Dice, HD95, ASSD and NSD against a reference segmentation. See the "
            "extension's README for the command line."
        )
        self.parent.acknowledgementText = (
            "Metrics follow MONAI's definitions. Dataset conventions follow the Medical Segmentation "
            "Decathlon and nnU-Net v2."
        )


# The segmentation server's address and the reader's token: application settings (they belong to
# the reader, not to a scene).
SERVER_URL_SETTING = "AttentionSeg/ServerUrl"
SERVER_TOKEN_SETTING = "AttentionSeg/ServerToken"


@parameterNodeWrapper
class AttentionSegParameterNode:
    modelsFolder: pathlib.Path
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    tta: bool = False
    uncertainty: bool = False
    overwriteOthers: bool = False
    clickSegmentation: slicer.vtkMRMLSegmentationNode
    correctedSegmentation: slicer.vtkMRMLSegmentationNode
    originalSegmentation: slicer.vtkMRMLSegmentationNode
    datasetJson: pathlib.Path
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
        self._worstErrors = []
        self._likelyWrong = []

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AttentionSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AttentionSegLogic()
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(300)
        self.pollTimer.connect("timeout()", self.onPoll)
        self.updateTimer = qt.QTimer()
        self.updateTimer.setInterval(1000)
        self.updateTimer.connect("timeout()", self.onPollModelUpdate)

        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        settings = qt.QSettings()
        self.ui.serverUrlLineEdit.text = settings.value(SERVER_URL_SETTING, "")
        self.ui.serverTokenLineEdit.text = settings.value(SERVER_TOKEN_SETTING, "")
        self.ui.serverUrlLineEdit.connect("editingFinished()", self.onServerChanged)
        self.ui.serverTokenLineEdit.connect("editingFinished()", self.onServerChanged)
        self.ui.modelsFolderPathLineEdit.connect("currentPathChanged(QString)", self.refreshModels)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.worstErrorsTableView.connect("selectionChanged()", self.onWorstErrorSelected)
        self.ui.likelyWrongTableView.connect("selectionChanged()", self.onLikelyWrongSelected)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.saveCorrectionButton.connect("clicked(bool)", self.onSaveCorrection)
        self.ui.updateModelButton.connect("clicked(bool)", self.onUpdateModel)
        self.ui.suggestClickButton.connect("clicked(bool)", self.onSuggestClick)
        self.ui.rollbackModelButton.connect("clicked(bool)", self.onRollbackModel)
        self.ui.nextCaseButton.connect("clicked(bool)", self.onNextCase)
        self.ui.computeMetricsButton.connect("clicked(bool)", self.onComputeMetrics)
        self.ui.loadReferenceButton.connect("clicked(bool)", self.onLoadReference)
        self.ui.newObjectButton.connect("clicked(bool)", self.onNewObject)
        self.ui.undoClickButton.connect("clicked(bool)", self.onUndoClick)
        self.ui.lockSegmentButton.connect("clicked(bool)", self.onLockSegment)
        self.ui.applyScribbleButton.connect("clicked(bool)", self.onApplyScribble)
        self.ui.applyLassoButton.connect("clicked(bool)", self.onApplyLasso)
        self.ui.overwriteOthersCheckBox.connect("toggled(bool)", self.logic.setOverwriteOthers)
        self.ui.modelsListWidget.connect("itemChanged(QListWidgetItem*)", self.updateClickMode)
        self.ui.cancelButton.enabled = False
        self._wireClickPrompts()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        if not str(self._parameterNode.modelsFolder) or str(self._parameterNode.modelsFolder) == ".":
            self._parameterNode.modelsFolder = self.logic.defaultModelsFolder()
        self.refreshModels()

    def cleanup(self):
        self.pollTimer.stop()
        self.logic.cancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
        self._wireClickPrompts()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # ----------------------------------------------------------------------------- inputs
    def inputVolumes(self):
        return list(self.ui.inputVolumesSelector.checkedNodes())

    def checkedModels(self):
        items = [self.ui.modelsListWidget.item(row) for row in range(self.ui.modelsListWidget.count)]
        return [item.data(qt.Qt.UserRole) for item in items if item.checkState() == qt.Qt.Checked]

    def refreshModels(self, *unused):
        if not requireDependencies():
            return
        # On first use nothing is checked: the shipped generalist is, so a first click needs no training.
        checked = set(self.checkedModels()) or set(self.logic.defaultModels())
        self.ui.modelsListWidget.clear()
        models = [
            (path.name, str(path)) for path in self.logic.listModels(self.ui.modelsFolderPathLineEdit.currentPath)
        ]
        serverUrl = self.ui.serverUrlLineEdit.text.strip()
        if serverUrl:
            try:
                models += [
                    (f"{url.rsplit('/', 1)[-1]} (server)", url)
                    for url in self.logic.listServerModels(serverUrl, self.ui.serverTokenLineEdit.text)
                ]
            except Exception as error:  # one line: unreachable, token refused
                slicer.util.errorDisplay(str(error))
        for name, source in models:
            item = qt.QListWidgetItem(name)
            item.setToolTip(source)
            item.setData(qt.Qt.UserRole, source)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked if source in checked else qt.Qt.Unchecked)
            self.ui.modelsListWidget.addItem(item)
        self.updateClickMode()

    def onServerChanged(self):
        settings = qt.QSettings()
        settings.setValue(SERVER_URL_SETTING, self.ui.serverUrlLineEdit.text.strip())
        settings.setValue(SERVER_TOKEN_SETTING, self.ui.serverTokenLineEdit.text)
        self.refreshModels()

    def _firstModel(self):
        models = self.checkedModels()
        if not models:
            raise ValueError("Check a model in the model list.")
        return models[0]

    # ---------------------------------------------------------------------------- segment
    def onSegment(self):
        if not requireDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
            self.logic.startSegmentation(
                self.inputVolumes(),
                self._firstModel(),
                self.ui.deviceComboBox.currentText,
                self.ui.ttaCheckBox.checked,
                self.ui.uncertaintyCheckBox.checked,
            )
            self.ui.progressBar.value = 0
            self.ui.cancelButton.enabled = True
            self.ui.segmentButton.enabled = False
            self.ui.segmentStatusLabel.text = "Segmenting..."
            self.pollTimer.start()

    def onPoll(self):
        state, fraction, message, node = self.logic.pollSegmentation()
        self.ui.progressBar.value = int(100 * fraction)
        if state == "running":
            return
        self.pollTimer.stop()
        self.ui.cancelButton.enabled = False
        self.ui.segmentButton.enabled = True
        self.ui.segmentStatusLabel.text = message
        if state == "done" and node is not None:
            self.ui.segmentationSelector.setCurrentNode(node)
            self.ui.originalSegmentationSelector.setCurrentNode(node)
            self.ui.clickSegmentationSelector.setCurrentNode(node)
            self.showUncertainty(self.logic.segmentationUncertainty())
        elif state == "failed":
            slicer.util.errorDisplay(f"Segmentation failed: {message}")

    def onCancel(self):
        self.logic.cancel()
        self.onPoll()

    def onCompare(self):
        if not requireDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Failed to compare the models.", waitCursor=True):
            result = self.logic.compare(
                self.inputVolumes(),
                self.checkedModels(),
                self.ui.referenceSegmentationSelector.currentNode(),
                self.ui.deviceComboBox.currentText,
                self.ui.ttaCheckBox.checked,
            )
            self.ui.metricsTableView.setMRMLTableNode(result["table"])
            slicer.modules.plots.logic().ShowChartInLayout(result["chart"])
            self._worstErrors = result["maps"].worst_errors
            self.ui.worstErrorsTableView.setMRMLTableNode(result["maps"].worst_table)
            self.ui.segmentStatusLabel.text = f"Compared {len(result['segmentations'])} model(s)."

    def showUncertainty(self, uncertainty):
        """Lay the uncertainty map over the slices (the segmentation stays on top) and list its regions."""
        self._likelyWrong = uncertainty.regions if uncertainty is not None else []
        self.ui.likelyWrongTableView.setMRMLTableNode(uncertainty.table if uncertainty is not None else None)
        if uncertainty is not None:
            slicer.util.setSliceViewerLayers(foreground=uncertainty.volume, foregroundOpacity=0.6)

    def onLikelyWrongSelected(self, *unused):
        """Centre the slice views on the selected doubtful region."""
        self._jumpToSelectedRow(self.ui.likelyWrongTableView, self._likelyWrong)

    def onWorstErrorSelected(self, *unused):
        """Centre the slice views on the selected error (the Logic gives its RAS centre)."""
        self._jumpToSelectedRow(self.ui.worstErrorsTableView, self._worstErrors)

    def _jumpToSelectedRow(self, tableView, rows):
        """Centre the slice views on the RAS centre of the table's selected row (``rows``: its dicts)."""
        selected = tableView.selectionModel().selectedRows() if rows else []
        if selected and selected[0].row() < len(rows):
            r, a, s = rows[selected[0].row()]["ras"]
            slicer.modules.markups.logic().JumpSlicesToLocation(r, a, s, True)

    # ---------------------------------------------------------------------- click-to-segment
    def _wireClickPrompts(self):
        """Give the place widgets the Logic's point and box nodes (made again after a scene close)."""
        points, box, scribble, lasso = self.logic.clickPromptNodes()
        for widget, node, handler in (
            (self.ui.clickPointsPlaceWidget, points, self.onClickPoint),
            (self.ui.clickBoxPlaceWidget, box, self.onClickBox),
            (self.ui.scribblePlaceWidget, scribble, None),  # applied with its button, once drawn
            (self.ui.lassoPlaceWidget, lasso, None),
        ):
            widget.setMRMLScene(slicer.mrmlScene)
            widget.setCurrentNode(node)
            event = slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent
            if handler is not None and not self.hasObserver(node, event, handler):
                self.addObserver(node, event, handler)

    def _clickTarget(self):
        target = self.logic.clickTargetSegmentation(self.ui.clickSegmentationSelector.currentNode())
        self.ui.clickSegmentationSelector.setCurrentNode(target)
        return target

    def updateClickMode(self, *unused):
        models = self.checkedModels()
        try:
            interactive = bool(models) and self.logic.isInteractive(models[0], self.ui.deviceComboBox.currentText)
        except Exception:  # an unreadable model file: the click section says so when it is used
            interactive = False
        self.ui.clickModeLabel.text = (
            "Interactive model: clicks and a box refine one segment at a time; Undo takes a step back."
            if interactive
            else "Automatic model: a click adds the structure the model finds in one window around it."
        )
        self.ui.clickBoxPlaceWidget.enabled = interactive
        for widget in (self.ui.scribblePlaceWidget, self.ui.lassoPlaceWidget):
            widget.enabled = interactive
        self.ui.applyScribbleButton.enabled = self.ui.applyLassoButton.enabled = interactive
        self.ui.newObjectButton.enabled = interactive
        self.ui.undoClickButton.enabled = interactive and self.logic.canUndoClick()

    def onClickPoint(self, caller, event):
        count = caller.GetNumberOfControlPoints()
        if count == 0:
            return
        point = [0.0, 0.0, 0.0]
        caller.GetNthControlPointPositionWorld(count - 1, point)
        positive = self.ui.positiveRadioButton.checked
        caller.SetNthControlPointLabel(count - 1, "+" if positive else "-")
        with slicer.util.tryWithErrorDisplay("Click-to-segment failed.", waitCursor=True):
            _, seconds = self.logic.clickToSegment(
                self.inputVolumes(),
                self._firstModel(),
                point,
                self._clickTarget(),
                positive,
                self.ui.deviceComboBox.currentText,
            )
            self.updateClickMode()
            self.ui.clickStatusLabel.text = f"{'Added' if positive else 'Removed'} in {seconds:.2f} s"

    def onClickBox(self, caller, event):
        with slicer.util.tryWithErrorDisplay("Box prompt failed.", waitCursor=True):
            _, seconds = self.logic.boxToSegment(
                self.inputVolumes(),
                self._firstModel(),
                caller,
                self._clickTarget(),
                self.ui.deviceComboBox.currentText,
            )
            self.updateClickMode()
            self.ui.clickStatusLabel.text = f"Box segmented in {seconds:.2f} s"

    def onApplyScribble(self):
        with slicer.util.tryWithErrorDisplay("Scribble failed.", waitCursor=True):
            positive = self.ui.positiveRadioButton.checked
            _, seconds = self.logic.scribbleToSegment(
                self.inputVolumes(),
                self._firstModel(),
                self._clickTarget(),
                positive,
                self.ui.deviceComboBox.currentText,
            )
            self.updateClickMode()
            self.ui.clickStatusLabel.text = f"Scribble applied in {seconds:.2f} s"

    def onApplyLasso(self):
        with slicer.util.tryWithErrorDisplay("Lasso failed.", waitCursor=True):
            _, seconds = self.logic.lassoToSegment(
                self.inputVolumes(), self._firstModel(), self._clickTarget(), self.ui.deviceComboBox.currentText
            )
            self.updateClickMode()
            self.ui.clickStatusLabel.text = f"Lasso applied in {seconds:.2f} s"

    def onNewObject(self):
        self.logic.newClickObject()
        self.ui.clickStatusLabel.text = "The next positive click or box starts a new segment."
        self.updateClickMode()

    def onLockSegment(self):
        with slicer.util.tryWithErrorDisplay("Lock failed.", waitCursor=True):
            node, segmentId = (
                self.ui.clickSegmentationSelector.currentNode(),
                self.ui.lockSegmentSelector.currentSegmentID(),
            )
            if node is None or not segmentId:
                raise ValueError("Choose the segment to lock.")
            locked = self.logic.toggleSegmentLock(node, segmentId)
            name = node.GetSegmentation().GetSegment(segmentId).GetName()
            self.ui.clickStatusLabel.text = f"{name} {'locked' if locked else 'unlocked'}."

    def onUndoClick(self):
        with slicer.util.tryWithErrorDisplay("Undo failed.", waitCursor=True):
            undone = self.logic.undoClick()
            self.ui.clickStatusLabel.text = "Undone." if undone else "Nothing to undo."
            self.updateClickMode()

    # ---------------------------------------------------------------------------- corrections
    def onSaveCorrection(self):
        with slicer.util.tryWithErrorDisplay("Failed to save the correction.", waitCursor=True):
            result = self.logic.saveCorrection(
                self.inputVolumes(),
                self.ui.correctedSegmentationSelector.currentNode(),
                self.ui.datasetPathLineEdit.currentPath,
                self.ui.originalSegmentationSelector.currentNode(),
            )
            dice = ", ".join(f"{value}: {score:.3f}" for value, score in result["dice"].items())
            self.ui.correctionStatusLabel.text = f"Saved case {result['case_id']}" + (
                f"; Dice original vs corrected {dice}" if dice else ""
            )

    # -------------------------------------------------------------------------------- metrics
    def onSuggestClick(self):
        with slicer.util.tryWithErrorDisplay("Cannot suggest a click.", waitCursor=True):
            suggestion = self.logic.suggestClick()
            if suggestion is None:
                self.ui.clickStatusLabel.text = "No suggestion: prompt an object with an interactive model first."
                return
            (r, a, s), positive = suggestion
            slicer.modules.markups.logic().JumpSlicesToLocation(r, a, s, True)
            kind = "positive" if positive else "negative"
            self.ui.clickStatusLabel.text = f"Least certain here (views centred): a {kind} click would help."

    def onUpdateModel(self):
        if not requireDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot update the model.", waitCursor=True):
            model = self._firstModel()
            self.logic.startModelUpdate(
                model, self.ui.datasetPathLineEdit.currentPath, device=self.ui.deviceComboBox.currentText
            )
            self.ui.updateModelButton.enabled = False
            self.ui.correctionStatusLabel.text = f"Updating {pathlib.Path(model).name} from the saved corrections..."
            self.updateTimer.start()

    def onPollModelUpdate(self):
        state, message = self.logic.pollModelUpdate()
        if state in ("running", "stopping"):
            self.ui.correctionStatusLabel.text = message or "Updating the model..."
            return
        self.updateTimer.stop()
        self.ui.updateModelButton.enabled = True
        self.ui.correctionStatusLabel.text = message
        if state == "finished":
            self.refreshModels()  # the model file is its new version now
        elif state == "failed":
            slicer.util.errorDisplay(message)

    def onRollbackModel(self):
        with slicer.util.tryWithErrorDisplay("Cannot roll the model back.", waitCursor=True):
            model = self._firstModel()
            version = self.logic.rollbackModel(model)
            self.ui.correctionStatusLabel.text = f"{pathlib.Path(model).name}: version {version} is current again."

    def onNextCase(self):
        if not requireDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot choose the next case.", waitCursor=True):
            caseId, nodes, score = self.logic.nextCase(
                self._firstModel(), self.ui.datasetPathLineEdit.currentPath, self.ui.deviceComboBox.currentText
            )
            slicer.util.setSliceViewerLayers(background=nodes[0], fit=True)
            self.ui.correctionStatusLabel.text = f"Next case: {caseId} (expected wrong volume {score:.2f} mL)."

    def onLoadReference(self):
        if not requireDependencies():
            return
        volumes = self.inputVolumes()
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            "Reference label map or DICOM SEG",
            "",
            "Label maps and DICOM SEG (*.nii *.nii.gz *.nrrd *.seg.nrrd *.mha *.dcm);;All files (*)",
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Failed to load the reference.", waitCursor=True):
            if not volumes:
                raise ValueError("Choose the input volume first: the reference is placed on its grid.")
            node = self.logic.loadReference(path, volumes[0])
            self.ui.referenceSegmentationSelector.setCurrentNode(node)

    def onComputeMetrics(self):
        if not requireDependencies():
            return
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
    """Slicer-facing facade over the engine's job logics on the application's scene (Qt-free, in
    ``AttentionSegLib.slicer``, tested with slicer-core); they share one predictor cache, so repeated
    clicks and segmentations do not reload a model."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._jobs = None
        self._overwriteOthers = False
        self._clickObject = None
        self._clickPromptNodes = ()
        self._runner = None

    def getParameterNode(self):
        return AttentionSegParameterNode(super().getParameterNode())

    def jobs(self):
        """The job logics on ``slicer.mrmlScene``: ``.segment``, ``.compare``, ``.click``,
        ``.metrics``, ``.corrections`` (made on first use, again when the scene changes)."""
        if self._jobs is None or self._jobs.scene is not slicer.mrmlScene:
            from AttentionSegLib.slicer.jobs import SegmentationJobs

            self._jobs = SegmentationJobs.for_scene(slicer.mrmlScene)
            self._clickObject = None
            self._applyOverlapPolicy()
        return self._jobs

    def clickObject(self):
        """The object interactive prompts refine, by the engine's one rule for it
        (``AttentionSegLib.slicer.click_object.ClickObject``, shared with the web page)."""
        jobs = self.jobs()
        if self._clickObject is None:
            from AttentionSegLib.slicer.click_object import ClickObject

            self._clickObject = ClickObject(jobs.click)
        return self._clickObject

    PROMPT_NODES = (
        ("vtkMRMLMarkupsFiducialNode", "AttentionSeg clicks"),
        ("vtkMRMLMarkupsROINode", "AttentionSeg box"),
        ("vtkMRMLMarkupsCurveNode", "AttentionSeg scribble"),
        ("vtkMRMLMarkupsClosedCurveNode", "AttentionSeg lasso"),
    )

    def clickPromptNodes(self):
        """(points, ROI, curve, closed curve) nodes the reader places prompts with; made when
        missing from the scene, never saved with it."""
        nodes = list(self._clickPromptNodes) + [None] * (len(self.PROMPT_NODES) - len(self._clickPromptNodes))
        for index, (className, name) in enumerate(self.PROMPT_NODES):
            if nodes[index] is None or not slicer.mrmlScene.IsNodePresent(nodes[index]):
                nodes[index] = slicer.mrmlScene.AddNewNodeByClass(className, name)
                nodes[index].SetSaveWithScene(False)
        self._clickPromptNodes = tuple(nodes)
        return self._clickPromptNodes

    def clickTargetSegmentation(self, segmentationNode=None):
        """The segmentation prompts go into: ``segmentationNode``, else a new one."""
        if segmentationNode is not None:
            return segmentationNode
        target = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "AttentionSeg clicks")
        target.CreateDefaultDisplayNodes()
        return target

    def defaultModelsFolder(self):
        from AttentionSegLib.inference.model_store import default_models_folder

        return default_models_folder()

    def listModels(self, folder):
        """The shipped models, then those of ``folder`` and of the default models folder."""
        from AttentionSegLib.inference.model_store import models_in_folders

        return models_in_folders(folder or None)

    def listServerModels(self, serverUrl, token):
        """Addresses (http(s)://HOST:PORT/models/NAME) of the server's models; the token becomes
        ATTENTIONSEG_TOKEN, which every server model of this session (and its background runs) sends.
        Raises AttentionSegError (one line) when the server is unreachable or refuses the token."""
        from AttentionSegLib.serve.client import ServerClient
        from AttentionSegLib.serve.tokens import TOKEN_VARIABLE

        os.environ[TOKEN_VARIABLE] = token
        client = ServerClient(serverUrl, token, retries=0)
        return [client.model_url(model["name"]) for model in client.models()]

    def defaultModels(self):
        """Paths (str) of the models selected when the reader has chosen none: the shipped ones
        (the promptable generalist)."""
        from AttentionSegLib.inference.model_store import list_registered_models, shipped_models_folder

        return [str(path) for path in list_registered_models(shipped_models_folder())]

    def startSegmentation(self, volumeNodes, modelFile, device="auto", tta=False, uncertainty=False):
        """Segment in the background; with ``uncertainty`` the map of where it is likely wrong comes too."""
        from AttentionSegLib.slicer.background import BackgroundSegmentation

        if self._runner is None or self._runner.scene is not slicer.mrmlScene:
            self._runner = BackgroundSegmentation(slicer.mrmlScene)
        self._runner.start(volumeNodes, modelFile, device=device, tta=tta, uncertainty=uncertainty)

    def segmentationUncertainty(self):
        """The last finished segmentation's uncertainty nodes (volume, colours, "Likely wrong" table,
        regions), or None when it was not asked for."""
        return self._runner.uncertainty if self._runner is not None else None

    def pollSegmentation(self):
        """(state, fraction, message, segmentation node or None)."""
        if self._runner is None:
            return "idle", 0.0, "", None
        state = self._runner.poll()
        if state == "done" and self._runner.result is not None:
            showIn3D(self._runner.result)  # segments as surfaces in 3D
        return state, self._runner.progress, self._runner.message, self._runner.result

    def cancel(self):
        if self._runner is not None:
            self._runner.cancel()

    def compare(self, volumeNodes, modelFiles, referenceSegmentationNode=None, device="auto", tta=False):
        return self.jobs().compare.compare(volumeNodes, modelFiles, referenceSegmentationNode, device=device, tta=tta)

    def clickToSegment(self, volumeNodes, modelFile, pointRas, segmentationNode, positive=True, device="auto"):
        """(segment id, seconds the click took: model, windows and segment update). Which segment
        an interactive click refines is the click object's rule (:meth:`clickObject`)."""
        import time

        started = time.perf_counter()
        segmentId = self.clickObject().click(volumeNodes, modelFile, pointRas, segmentationNode, positive, device)
        showIn3D(segmentationNode)  # the whole object in the 3D view
        return segmentId, time.perf_counter() - started

    def boxToSegment(self, volumeNodes, modelFile, roiNode, segmentationNode, device="auto"):
        """(segment id, seconds) of a box prompt (interactive models)."""
        import time

        started = time.perf_counter()
        segmentId = self.clickObject().box(volumeNodes, modelFile, roiNode, segmentationNode, device)
        showIn3D(segmentationNode)
        return segmentId, time.perf_counter() - started

    def setOverwriteOthers(self, overwrite):
        """Whether a new or refined object may take voxels of other unlocked segments (default: never)."""
        self._overwriteOthers = bool(overwrite)
        if self._jobs is not None:
            self._applyOverlapPolicy()

    def _applyOverlapPolicy(self):
        from AttentionSegLib.slicer.segment_overlap import OVERLAP_NEVER, OVERLAP_OVERWRITE

        self._jobs.click.overlap = OVERLAP_OVERWRITE if self._overwriteOthers else OVERLAP_NEVER

    def toggleSegmentLock(self, segmentationNode, segmentId):
        """Lock the segment against prompts, or unlock a locked one; returns whether it is locked now."""
        from AttentionSegLib.slicer.segment_overlap import segment_is_locked, set_segment_locked

        locked = not segment_is_locked(segmentationNode, segmentId)
        set_segment_locked(segmentationNode, segmentId, locked)
        return locked

    def scribbleToSegment(self, volumeNodes, modelFile, segmentationNode, positive=True, device="auto"):
        """(segment id, seconds) of the placed curve as a scribble; the curve is cleared after."""
        import time

        curve = self.clickPromptNodes()[2]
        started = time.perf_counter()
        segmentId = self.clickObject().scribble(volumeNodes, modelFile, curve, segmentationNode, positive, device)
        curve.RemoveAllControlPoints()
        showIn3D(segmentationNode)
        return segmentId, time.perf_counter() - started

    def lassoToSegment(self, volumeNodes, modelFile, segmentationNode, device="auto"):
        """(segment id, seconds) of the placed closed curve as a lasso; the curve is cleared after."""
        import time

        contour = self.clickPromptNodes()[3]
        started = time.perf_counter()
        segmentId = self.clickObject().lasso(volumeNodes, modelFile, contour, segmentationNode, device)
        contour.RemoveAllControlPoints()
        showIn3D(segmentationNode)
        return segmentId, time.perf_counter() - started

    def undoClick(self):
        """Whether the current object's last prompt was undone."""
        return self.clickObject().undo()

    def canUndoClick(self):
        return self._jobs is not None and self.clickObject().can_undo

    def newClickObject(self):
        """The next prompt starts a new segment."""
        self.clickObject().new_object()

    def isInteractive(self, modelFile, device="auto"):
        return self.jobs().click.is_interactive(modelFile, device)

    def saveCorrection(self, volumeNodes, correctedSegmentationNode, datasetJson, originalSegmentationNode=None):
        if not datasetJson:
            raise ValueError("Choose the dataset definition (dataset.json).")
        return self.jobs().corrections.save_correction(
            volumeNodes, correctedSegmentationNode, datasetJson, originalSegmentationNode
        )

    def suggestClick(self):
        """(RAS point, positive) where the current object is least certain, or None."""
        return self.clickObject().suggest()

    def startModelUpdate(self, modelFile, datasetJson, minutes=5.0, device="auto"):
        """Fine-tune ``modelFile`` on the dataset with its saved corrections, in the background; when
        done the model file is its next version (``AttentionSegLib.training.update_model``)."""
        from AttentionSegLib.slicer.training_logic import TrainingLogic

        if not datasetJson:
            raise ValueError("Choose the dataset definition (dataset.json) the corrections were saved into.")
        self._updater = TrainingLogic(slicer.mrmlScene)
        self._updater.start_update(modelFile, datasetJson, minutes, device)

    def pollModelUpdate(self):
        """(state, message) of the running update: running, finished, failed or stopped."""
        updater = getattr(self, "_updater", None)
        if updater is None:
            return "idle", ""
        updater.poll()
        return updater.state, updater.message or updater.status_text()

    def rollbackModel(self, modelFile):
        """Make the model's previous version current again; returns that version's number."""
        from AttentionSegLib.inference.model_versions import rollback

        return rollback(modelFile).version

    def nextCase(self, modelFile, datasetJson, device="auto"):
        """The dataset's case without labels where the model is least sure (``attentionseg dataset
        rank``), loaded: (case id, its volume nodes, expected wrong volume in mL)."""
        from AttentionSegLib.slicer.next_case import load_next_case

        if not datasetJson:
            raise ValueError("Choose the dataset definition (dataset.json) whose cases to rank.")
        top, nodes = load_next_case(
            slicer.mrmlScene, self.jobs().segment.predictors.get(modelFile, device), datasetJson
        )
        return top.case_id, nodes, top.expected_wrong_ml

    def loadReference(self, path, volumeNode):
        """A reference segmentation from a label map file or a DICOM SEG, on ``volumeNode``'s grid."""
        from AttentionSegLib.slicer.reference_file import reference_segmentation_from_file

        return reference_segmentation_from_file(slicer.mrmlScene, path, volumeNode)

    def computeMetrics(self, segmentationNode, referenceSegmentationNode, referenceVolumeNode=None, nsdToleranceMm=1.0):
        """(table node, report); without a reference volume, on the reference segmentation's geometry."""
        return self.jobs().metrics.compute_metrics(
            segmentationNode, referenceSegmentationNode, referenceVolumeNode, nsdToleranceMm
        )


class AttentionSegTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_metrics_of_a_segmentation_against_itself_and_a_shifted_copy()
        self.setUp()
        self.test_segment_click_and_correct_with_a_model_trained_here()

    def test_metrics_of_a_segmentation_against_itself_and_a_shifted_copy(self):
        import numpy as np

        from AttentionSegLib.data.phantoms import ellipsoid_label_map
        from AttentionSegLib.io.image import Image
        from AttentionSegLib.slicer.mrml import segmentation_node_from_label_image, volume_node_from_image

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

    def test_segment_click_and_correct_with_a_model_trained_here(self):
        """Train a tiny model on generated phantoms (seconds), then segment a generated volume,
        click on a structure, and save the correction into a copy of the dataset."""
        import shutil
        import tempfile

        import numpy as np

        from AttentionSegLib.data.dataset import load_dataset
        from AttentionSegLib.data.phantoms import write_phantom_dataset
        from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
        from AttentionSegLib.data.validation import validate_dataset
        from AttentionSegLib.slicer.mrml import segmentation_node_from_label_image, volume_node_from_image
        from AttentionSegLib.training.config import TrainingConfig
        from AttentionSegLib.training.trainer import train

        folder = pathlib.Path(tempfile.mkdtemp(prefix="AttentionSegSelfTest-"))
        try:
            dataset = write_phantom_dataset(folder / "data", n_cases=6, shape=(16, 24, 24), label_names=["a", "b"])
            config = TrainingConfig(
                dataset=str(dataset), model="unet", run_dir=str(folder / "run"), compact=True,
                patch_size=[16, 16, 16], epochs=6, iterations_per_epoch=6, learning_rate=1e-2, device="cpu",
            )  # fmt: skip
            model = train(config)["model_file"]
            definition = load_dataset(dataset)
            case = definition.case("phantom_000")
            image = read_case_image(case, definition).channel(0)
            volume = volume_node_from_image(slicer.mrmlScene, image, "phantom")
            jobs = AttentionSegLogic().jobs()
            segmentation = jobs.segment.segment(volume, model, device="cpu")
            self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 2)

            reference = read_case_label(case, definition, image)
            k, j, i = np.argwhere(reference == 2).mean(axis=0).round().astype(int)
            lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
            edits = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edits")
            edits.SetReferenceImageGeometryParameterFromVolumeNode(volume)
            jobs.click.click_to_segment(volume, model, (-lps[0], -lps[1], lps[2]), edits, device="cpu")

            corrected = segmentation_node_from_label_image(
                slicer.mrmlScene, image.with_array(reference.astype(np.uint8)), {1: "a", 2: "b"}, name="corrected"
            )
            result = jobs.corrections.save_correction(volume, corrected, dataset, segmentation)
            self.assertEqual(validate_dataset(load_dataset(dataset)), [])
            self.assertIn(result["case_id"], {c.case_id for c in load_dataset(dataset).cases})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("AttentionSeg segment / click / correction test passed")
