"""The one terminal progress bar of the command line: ``LABEL [#####.........] NOTE`` on stderr.

It draws only when stderr is a terminal (a pipe or a log file gets no carriage-return noise) and
redraws one line in place; :meth:`ProgressBar.close` wipes that line before other output follows.
Programs that follow a job read progress events (``--progress``, :mod:`AttentionSegLib.progress`),
not this bar.

Example:
    >>> bar = ProgressBar("evaluating")
    >>> bar(0.5, "5/10 case_005")  # "evaluating [###############...............]  50% 5/10 case_005"
    >>> bar.close()
"""

from __future__ import annotations

import sys

__all__ = ["ProgressBar"]

_WIDTH = 30  # characters between the brackets


class ProgressBar:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise.

    Args:
        label: text before the bar (:meth:`draw` may change it, e.g. per epoch).
        enabled: False makes the bar silent even on a terminal (``--quiet``).
    """

    def __init__(self, label: str = "", enabled: bool = True) -> None:
        self.label = label
        self.active = enabled and sys.stderr.isatty()
        self._width = 0  # characters of the line drawn last; 0: nothing to wipe

    def __call__(self, fraction: float, note: str = "") -> None:
        """Draw ``fraction`` (0 to 1) done, as a percentage followed by ``note``."""
        self.draw(fraction, f"{100 * fraction:3.0f}% {note}")

    def draw(self, fraction: float, note: str, label: str | None = None) -> None:
        """Draw the bar ``fraction`` (0 to 1) full, followed by ``note``; ``label`` replaces the label."""
        if not self.active:
            return
        if label is not None:
            self.label = label
        done = int(_WIDTH * min(max(fraction, 0.0), 1.0))
        line = f"{self.label} [{'#' * done}{'.' * (_WIDTH - done)}] {note}"
        sys.stderr.write("\r" + line.ljust(self._width))
        sys.stderr.flush()
        self._width = len(line)

    def close(self) -> None:
        """Wipe the bar's line (if one is drawn) so that the next output starts on a clean line."""
        if self.active and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
        self._width = 0
