"""AttentionSegTraining: train attention-based segmentation networks on a dataset definition.

Check a dataset definition (MSD or nnU-Net v2) and its cross-validation folds, then train a network
on it in a separate process, with live loss and validation-Dice curves, Stop and Resume; the
finished model is registered in the folder the AttentionSeg module lists models from.

Module, Widget and Test are thin: the work is done by the Qt-free engine
(``AttentionSegLib.slicer.training_logic``, tested with slicer-core), and the trainer is the command line's
``attentionseg train``. The form becomes one ``TrainingConfig`` (``AttentionSegLib.training.config``),
the schema the trainer, the command line and the run folder's ``config.json`` share. The engine
ships with the AttentionSeg module, hence the dependency on it.
"""

import json
import pathlib
from collections.abc import Sequence
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


class AttentionSegTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "AttentionSeg Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["AttentionSeg"]  # AttentionSegLib ships with the AttentionSeg module
        self.parent.contributors = ["AttentionSeg developers"]
        self.parent.helpText = (
            "Train attention-based segmentation networks (AXUNet, integrated-attention CNN, DANIE, Swin-NeXt, "
            "UNETR++, MONAI baselines) on a dataset definition (MSD or nnU-Net v2 dataset.json). Validate the "
            "dataset and look at its cross-validation folds, choose a network and its recipe (values left at "
            "their minimum use the network's recipe), then Start: training runs in a separate process, the chart "
            "shows the loss and the validation Dice per epoch, Stop keeps the last checkpoint and Resume continues "
            "from it. A finished model is registered for the AttentionSeg module. The same runs are available on "
            "the command line as 'attentionseg train'."
        )
        self.parent.acknowledgementText = (
            "Dataset conventions of the Medical Segmentation Decathlon and nnU-Net v2. Training builds on PyTorch "
            "and MONAI."
        )


class _RegisteredNetworkNames(Sequence):
    """The registry's network names, looked up on first use: loading the module must not import torch."""

    def _names(self):
        try:
            from AttentionSegLib.models import list_models
        except ImportError:  # torch or MONAI not installed yet: requireDependencies() offers them
            return []
        return list_models()

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self):
        return len(self._names())


@parameterNodeWrapper
class AttentionSegTrainingParameterNode:
    datasetPath: pathlib.Path
    folds: Annotated[int, WithinRange(2, 20)] = 5
    seed: Annotated[int, WithinRange(0, 999999)] = 0
    network: Annotated[str, Choice(_RegisteredNetworkNames())] = "axunet"
    interactive: bool = False
    # A model file to fine-tune (attentionseg train --init); empty: train from scratch.
    initModel: pathlib.Path
    # 0 (or empty text) leaves the value to the network's recipe; time limit 0 is none.
    epochs: Annotated[int, WithinRange(0, 100000)] = 0
    timeLimitMinutes: Annotated[int, WithinRange(0, 100000)] = 0
    patchSize: str = ""
    batchSize: Annotated[int, WithinRange(0, 1024)] = 0
    learningRate: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    fold: Annotated[int, WithinRange(0, 19)] = 0
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    extraArguments: str = ""
    runFolder: pathlib.Path


class AttentionSegTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    POLL_INTERVAL_MS = 500

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._shownLog = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AttentionSegTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AttentionSegTrainingLogic()
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(self.POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPollTraining)
        self.ui.validateButton.connect("clicked(bool)", self.onValidate)
        self.ui.splitButton.connect("clicked(bool)", self.onSplit)
        self.ui.planButton.connect("clicked(bool)", self.onShowPlan)
        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        self.pollTimer.stop()
        # The trainer saves its last checkpoint and ends; Resume continues it in a later session.
        self.logic.stopTraining()
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

    def onValidate(self):
        if not requireDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot read the dataset definition.", waitCursor=True):
            summary, problems = self.logic.validateDataset(self.ui.datasetPathLineEdit.currentPath)
            lines = [f"{summary['name']}: {summary['n_cases']} cases, {len(problems)} problem(s)"]
            lines += [str(problem) for problem in problems]
            self.ui.logTextEdit.setPlainText("\n".join(lines))

    def onSplit(self):
        if not requireDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot split the dataset.", waitCursor=True):
            folds = self.logic.folds(
                self.ui.datasetPathLineEdit.currentPath, self.ui.foldsSpinBox.value, self.ui.seedSpinBox.value
            )
            self.ui.logTextEdit.setPlainText(json.dumps(folds, indent=1))

    def onShowPlan(self):
        if not requireDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot plan the training.", waitCursor=True):
            self.ui.logTextEdit.setPlainText(self.logic.planText(self._parameterNode))

    def onStart(self):
        if not requireDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot start training.", waitCursor=True):
            self.logic.startTraining(self._parameterNode)
            self.followTraining()

    def onResume(self):
        if not requireDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot resume training.", waitCursor=True):
            self.logic.resumeTraining(self._parameterNode)
            self.followTraining()

    def onStop(self):
        self.logic.stopTraining()
        self.updateTrainingDisplay()

    def followTraining(self):
        self.ui.plotWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.plotWidget.setMRMLPlotViewNode(self.logic.plotViewNode())
        self._shownLog = None
        self.updateTrainingDisplay()
        self.pollTimer.start()

    def onPollTraining(self):
        self.logic.pollTraining()
        self.updateTrainingDisplay()

    def updateTrainingDisplay(self):
        training = self.logic.training
        running = training.is_running
        self.ui.startButton.enabled = not running
        self.ui.resumeButton.enabled = not running
        self.ui.stopButton.enabled = running
        self.ui.progressBar.value = round(100 * training.progress())
        self.ui.statusLabel.text = training.status_text()
        log = training.log_text()
        if log != self._shownLog:
            self._shownLog = log
            self.ui.logTextEdit.setPlainText(log)
            scrollBar = self.ui.logTextEdit.verticalScrollBar()
            scrollBar.setValue(scrollBar.maximum)
        if not running:
            self.pollTimer.stop()


class AttentionSegTrainingLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic; the work is in ``AttentionSegLib.slicer.training_logic`` (Qt-free, tested with slicer-core).

    Args:
        processFactory: how the trainer process is started (default: a real process); tests pass
            ``AttentionSegLib.slicer.testing.ReplayTrainingProcess.factory(events)``.
        modelsFolder: where finished models are registered (default: the AttentionSeg models folder).
    """

    def __init__(self, processFactory=None, modelsFolder=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.processFactory = processFactory
        self.modelsFolder = modelsFolder
        self._training = None

    def getParameterNode(self):
        return AttentionSegTrainingParameterNode(super().getParameterNode())

    @property
    def training(self):
        """The engine's ``TrainingLogic`` on the application's scene, made on first use."""
        if self._training is None:
            from AttentionSegLib.slicer.training_logic import TrainingLogic

            self._training = TrainingLogic(slicer.mrmlScene, self.processFactory, self.modelsFolder)
        return self._training

    def validateDataset(self, datasetPath):
        from AttentionSegLib.data.dataset import load_dataset
        from AttentionSegLib.data.validation import validate_dataset

        definition = load_dataset(datasetPath)
        return definition.summary(), validate_dataset(definition)

    def folds(self, datasetPath, nFolds, seed):
        from AttentionSegLib.data.dataset import load_dataset
        from AttentionSegLib.data.splits import k_fold_split

        return k_fold_split([case.case_id for case in load_dataset(datasetPath).cases], nFolds, seed)

    def trainingConfig(self, parameterNode):
        """The run the parameter node describes, as the ``TrainingConfig`` the trainer takes
        (``AttentionSegLib.slicer.training_form.config_from_form``: 0 or empty text is the recipe's value)."""
        from AttentionSegLib.slicer.training_form import config_from_form

        return config_from_form(
            dataset=parameterNode.datasetPath,
            model=parameterNode.network,
            run_dir=parameterNode.runFolder,
            epochs=parameterNode.epochs,
            time_limit_min=parameterNode.timeLimitMinutes,
            patch_size=parameterNode.patchSize,
            batch_size=parameterNode.batchSize,
            learning_rate=parameterNode.learningRate,
            fold=parameterNode.fold,
            n_folds=parameterNode.folds,
            seed=parameterNode.seed,
            device=parameterNode.device,
            interactive=parameterNode.interactive,
            init=parameterNode.initModel,
            extra_options=parameterNode.extraArguments,
        )

    def planText(self, parameterNode):
        """The experiment plan for the form's run (``AttentionSegLib.training.experiment_planner.plan_report``):
        what Start will take from the dataset, and which values the form sets itself."""
        from AttentionSegLib.training.experiment_planner import plan_report

        return plan_report(self.trainingConfig(parameterNode))

    def startTraining(self, parameterNode):
        """Start the run the parameter node describes; an empty run folder becomes a new one, written back."""
        config = self.trainingConfig(parameterNode)
        self.training.start(config)
        parameterNode.runFolder = pathlib.Path(config.run_dir)

    def resumeTraining(self, parameterNode):
        """Resume the run in the parameter node's run folder, or the last run when that is empty."""
        if str(parameterNode.runFolder) in ("", "."):
            self.training.resume()
        else:
            self.training.resume(self.trainingConfig(parameterNode))

    def stopTraining(self):
        if self._training is not None:
            self._training.stop()

    def pollTraining(self):
        """New progress events (the curves are updated); see ``TrainingLogic.poll``."""
        return self.training.poll()

    def plotViewNode(self):
        return self.training.plot_view_node()


class AttentionSegTrainingTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_validate_generated_dataset()
        self.setUp()
        self.test_training_with_a_replayed_trainer()

    def test_validate_generated_dataset(self):
        import os
        import tempfile

        import numpy as np

        from AttentionSegLib.io.image import Image, write_image

        folder = tempfile.mkdtemp()
        os.makedirs(os.path.join(folder, "imagesTr"))
        os.makedirs(os.path.join(folder, "labelsTr"))
        for index in range(3):
            labels = np.zeros((8, 8, 8), np.uint8)
            labels[2:5, 2:5, 2:5] = 1
            write_image(Image(labels.astype(np.float32)), os.path.join(folder, "imagesTr", f"case{index}_0000.nii.gz"))
            write_image(Image(labels), os.path.join(folder, "labelsTr", f"case{index}.nii.gz"))
        with open(os.path.join(folder, "dataset.json"), "w") as stream:
            json.dump(
                {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"},
                stream,
            )
        summary, problems = AttentionSegTrainingLogic().validateDataset(os.path.join(folder, "dataset.json"))
        self.assertEqual(summary["n_cases"], 3)
        self.assertEqual(problems, [])
        self.delayDisplay("AttentionSegTraining dataset test passed")

    def test_training_with_a_replayed_trainer(self):
        import tempfile

        from AttentionSegLib.slicer.testing import ReplayTrainingProcess

        folder = pathlib.Path(tempfile.mkdtemp())
        dataset = folder / "Dataset001_Organ" / "dataset.json"
        dataset.parent.mkdir()
        dataset.write_text("{}")
        runFolder = folder / "runs" / "organ-axunet"
        events = [("start", {"model": "axunet", "labels": {"1": "organ"}, "epochs": 2, "time_limit_min": None})]
        for epoch, loss, dice in ((1, 0.8, 0.5), (2, 0.6, 0.7)):
            events.append(("epoch", {"epoch": epoch, "epochs": 2, "loss": loss, "lr": 0.001, "elapsed_s": epoch}))
            events.append(
                ("validation", {"epoch": epoch, "dice": {"1": dice}, "mean_dice": dice, "best_mean_dice": dice})
            )
            events.append(("checkpoint", {"epoch": epoch, "kind": "best"}))
        events.append(("end", {"epochs_done": 2, "best_epoch": 2, "best_mean_dice": 0.7, "reason": "epochs"}))
        logic = AttentionSegTrainingLogic(ReplayTrainingProcess.factory(events), modelsFolder=folder / "models")

        parameterNode = logic.getParameterNode()
        parameterNode.datasetPath = dataset
        parameterNode.network = "axunet"
        parameterNode.epochs = 2
        parameterNode.runFolder = runFolder
        logic.startTraining(parameterNode)
        self.assertEqual(logic.training.wait(timeout_s=30, poll_interval_s=0), "finished")

        table = logic.training.curves.table_node.GetTable()
        self.assertEqual(table.GetNumberOfRows(), 2)
        self.assertEqual(logic.training.curves.column("Dice organ"), [0.5, 0.7])
        self.assertEqual(logic.plotViewNode().GetPlotChartNodeID(), logic.training.curves.chart_node.GetID())
        self.assertEqual(logic.training.registered_model, folder / "models" / "organ-axunet.pt")
        self.assertEqual(logic.training.registered_model.read_text(), "model of epoch 2")
        self.delayDisplay("AttentionSegTraining replayed training test passed")
