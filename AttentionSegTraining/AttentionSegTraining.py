"""AttentionSegTraining: prepare and (in later versions) launch training from a dataset definition.

For now the module checks a dataset definition (MSD or nnU-Net v2) case by case and shows its
deterministic cross-validation folds: the same code as ``attentionseg dataset validate`` and
``attentionseg dataset split``.
"""

import json

import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class AttentionSegTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "AttentionSeg Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["AttentionSeg developers"]
        self.parent.helpText = (
            "Check a dataset definition (MSD or nnU-Net v2 dataset.json) and its cross-validation folds "
            "before training attention-based segmentation networks on it."
        )
        self.parent.acknowledgementText = "Dataset conventions of the Medical Segmentation Decathlon and nnU-Net v2."


@parameterNodeWrapper
class AttentionSegTrainingParameterNode:
    datasetPath: str = ""
    folds: int = 5
    seed: int = 0


class AttentionSegTrainingWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AttentionSegTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AttentionSegTrainingLogic()
        self.ui.validateButton.connect("clicked(bool)", self.onValidate)
        self.ui.splitButton.connect("clicked(bool)", self.onSplit)
        self._parameterNode = self.logic.getParameterNode()
        self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def cleanup(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)

    def onValidate(self):
        with slicer.util.tryWithErrorDisplay("Cannot read the dataset definition.", waitCursor=True):
            summary, problems = self.logic.validateDataset(self.ui.datasetPathLineEdit.currentPath)
            lines = [f"{summary['name']}: {summary['n_cases']} cases, {len(problems)} problem(s)"]
            lines += [str(problem) for problem in problems]
            self.ui.logTextEdit.setPlainText("\n".join(lines))

    def onSplit(self):
        with slicer.util.tryWithErrorDisplay("Cannot split the dataset.", waitCursor=True):
            folds = self.logic.folds(
                self.ui.datasetPathLineEdit.currentPath, self.ui.foldsSpinBox.value, self.ui.seedSpinBox.value
            )
            self.ui.logTextEdit.setPlainText(json.dumps(folds, indent=1))


class AttentionSegTrainingLogic(ScriptedLoadableModuleLogic):
    """Calls the engine; no Qt."""

    def getParameterNode(self):
        return AttentionSegTrainingParameterNode(super().getParameterNode())

    def validateDataset(self, datasetPath):
        from AttentionSegLib.dataset import load_dataset, validate_dataset

        definition = load_dataset(datasetPath)
        return definition.summary(), validate_dataset(definition)

    def folds(self, datasetPath, nFolds, seed):
        from AttentionSegLib.dataset import k_fold_split, load_dataset

        return k_fold_split([case.case_id for case in load_dataset(datasetPath).cases], nFolds, seed)


class AttentionSegTrainingTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_validate_generated_dataset()

    def test_validate_generated_dataset(self):
        import os
        import tempfile

        import numpy as np

        from AttentionSegLib.image import Image, write_image

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
