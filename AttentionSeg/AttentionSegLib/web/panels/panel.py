"""What every panel of the page shares: the page it sits on, and the guard around its callbacks."""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback

from AttentionSegLib.errors import AttentionSegError

__all__ = ["Panel", "guarded"]

log = logging.getLogger("attentionseg.web")


def guarded(method):
    """Run a panel callback; bad input (AttentionSegError) becomes the page's one-line error, any
    other failure a one-line internal error with the traceback in the server's log. The server
    and its scene stay up either way. Keeps a callback synchronous or asynchronous as it is."""

    def report(panel, error: Exception) -> None:
        if isinstance(error, AttentionSegError):
            panel.page.show_error(str(error))
            return
        log.error("%s failed:\n%s", method.__name__, traceback.format_exc())
        panel.page.show_error(f"internal error in {method.__name__}: {type(error).__name__}: {error}")

    if asyncio.iscoroutinefunction(method):

        @functools.wraps(method)
        async def run_async(panel, *args, **kwargs):
            panel.page.clear_error()
            try:
                return await method(panel, *args, **kwargs)
            except Exception as error:  # noqa: BLE001 - a page action must never take the server down
                report(panel, error)
            return None

        return run_async

    @functools.wraps(method)
    def run(panel, *args, **kwargs):
        panel.page.clear_error()
        try:
            return method(panel, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - a page action must never take the server down
            report(panel, error)
        return None

    return run


class Panel:
    """One panel: ``build`` adds its controls where the page's layout puts them, its callbacks
    call the workspace and write their results into the page's state.

    Args:
        page: the :class:`~AttentionSegLib.web.app.AttentionSegWebApp` (state, server, workspace,
            the Slicer views, and the page-wide helpers: ``show_error``, ``say``, ``edit``).
    """

    def __init__(self, page) -> None:
        self.page = page
        self.server = page.server
        self.state = page.state
        self.workspace = page.workspace

    def initial_state(self) -> dict:
        """The page state this panel owns, with its starting values."""
        return {}

    def build(self) -> None:
        """Add the panel's controls to the layout being built."""
        raise NotImplementedError

    def poll(self) -> None:
        """Follow the panel's running work (called every half second)."""

    def case_loaded(self) -> None:
        """A new case is shown: forget results of the old one."""

    def say(self, message: str) -> None:
        self.page.say(message)

    def upload_js(self, callback) -> str:
        """A file input's change handler: the chosen files go to ``callback``, and the input is
        emptied, so that choosing the same file again (fixed, or reloaded) is a new upload."""
        name = self.server.controller.trigger_name(callback)
        return f"trigger('{name}', [Array.from($event.target.files)]); $event.target.value = ''"
