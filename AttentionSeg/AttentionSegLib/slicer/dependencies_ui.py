"""First use in Slicer: check the engine's dependencies and offer to install them.

The check, the dialog text and the install order are :mod:`AttentionSegLib.slicer.dependencies`
(Qt-free, tested without Slicer); this file only hands it Slicer's pieces: the confirmation dialog,
``slicer.util.pip_install``, the PyTorch extension's installer and a progress dialog. It imports
nothing that needs torch, so it runs before torch is there.
"""

from __future__ import annotations

import slicer

from AttentionSegLib.slicer.dependencies import (
    DependencyError,
    check_dependencies,
    confirmation_text,
    install_dependencies,
)

__all__ = ["ensure_dependencies"]

_ready = False  # once satisfied in this Slicer session, never checked again


def pytorch_installer():
    """The PyTorch extension's installer (``PyTorchUtilsLogic.installTorch``), or None without it."""
    try:
        import PyTorchUtils
    except ImportError:
        return None
    logic = PyTorchUtils.PyTorchUtilsLogic()

    def install(specifier: str) -> None:
        # The extension chooses the CUDA (or CPU) wheel that matches the driver.
        if logic.installTorch(askConfirmation=False, torchVersionRequirement=specifier) is None:
            raise RuntimeError("the PyTorch extension did not install PyTorch")

    return install


def ensure_dependencies() -> bool:
    """True when everything is installed (after installing it with the user's consent).

    On refusal or failure, a message says what is missing; the module stays usable for what needs
    no engine, and the next action asks again.
    """
    global _ready
    if _ready:
        return True
    check = check_dependencies()
    if check.ok:
        _ready = True
        return True
    if not slicer.util.confirmOkCancelDisplay(confirmation_text(check), windowTitle="AttentionSeg: install packages"):
        slicer.util.showStatusMessage("AttentionSeg: packages not installed; the module cannot segment yet.", 5000)
        return False
    dialog = slicer.util.createProgressDialog(labelText="Installing packages for AttentionSeg ...", maximum=100)

    def progress(message: str, fraction: float) -> None:
        dialog.labelText = message
        dialog.value = int(100 * fraction)
        slicer.app.processEvents()

    try:
        install_dependencies(
            check,
            pip_install=lambda requirements: slicer.util.pip_install(" ".join(requirements)),
            install_torch=pytorch_installer(),
            progress=progress,
        )
    except DependencyError as error:
        slicer.util.errorDisplay(str(error), windowTitle="AttentionSeg")
        return False
    finally:
        dialog.close()
    _ready = check_dependencies().ok
    if not _ready:
        slicer.util.errorDisplay("Packages were installed but are not importable yet: restart Slicer.")
    return _ready
