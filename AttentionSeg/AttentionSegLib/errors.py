"""Errors a user can act on.

Every error raised for bad input derives from :class:`AttentionSegError`; its message is one line
that names the file (or case) and the problem. The command line prints that line and exits with
code 2; anything else is a bug and keeps its traceback.
"""

__all__ = [
    "InputWarning",
    "AttentionSegError",
    "ImageReadError",
    "ImageWriteError",
    "OutputWriteError",
    "GeometryMismatchError",
    "DatasetError",
]


class AttentionSegError(Exception):
    """Bad input that the user can fix; the message is a single line."""


class ImageReadError(AttentionSegError):
    """A file is missing, unreadable or not an image this engine supports."""


class OutputWriteError(AttentionSegError):
    """An output file cannot be written (no such folder, read-only, disk full ...); what was there
    before is left as it was."""


class ImageWriteError(OutputWriteError):
    """An image cannot be written (unsupported format for its content, unwritable path)."""


class GeometryMismatchError(AttentionSegError):
    """Two images that must share one voxel grid do not."""


class DatasetError(AttentionSegError):
    """A dataset definition cannot be read or is inconsistent."""


class InputWarning(UserWarning):
    """Input that was read with a correction the user should know about (one line: what was done)."""
