"""The ``attentionseg`` command line (also ``python -m AttentionSegLib``).

One module per command group, each with an ``add_parser`` that declares the command's flags and
the function that runs it: :mod:`.evaluate`, :mod:`.demo`, :mod:`.dataset` (info, validate,
split), :mod:`.models`, :mod:`.plan`, :mod:`.train`, :mod:`.segment` and :mod:`.dataset_evaluation`
(evaluate-dataset, compare). :mod:`.common` holds what they share (output checks, inference
options) and :mod:`.progress_bar` the one terminal progress bar. Commands import the engine only
when they run, so ``--help`` stays fast.

Exit codes: 0 success, 1 the command ran but found problems (``dataset validate``), 2 bad input
(one line on stderr, no traceback, no file changed).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from AttentionSegLib import __version__
from AttentionSegLib.cli import (
    campaign,
    dataset,
    dataset_evaluation,
    demo,
    evaluate,
    interactive_eval,
    model_updates,
    models,
    plan,
    segment,
    serve,
    train,
    train_generalist,
    web,
)
from AttentionSegLib.cli.common import EXIT_BAD_INPUT, EXIT_OK, EXIT_PROBLEMS
from AttentionSegLib.errors import AttentionSegError, InputWarning

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_BAD_INPUT"]

# In the order ``attentionseg --help`` lists them.
_COMMANDS = (
    evaluate.add_parser,
    demo.add_parser,
    dataset.add_parser,
    models.add_parser,
    plan.add_parser,
    train.add_parser,
    train_generalist.add_parser,
    model_updates.add_update_parser,
    model_updates.add_versions_parser,
    campaign.add_parser,
    segment.add_parser,
    dataset_evaluation.add_evaluate_dataset_parser,
    dataset_evaluation.add_compare_parser,
    interactive_eval.add_parser,
    web.add_parser,
    serve.add_serve_parser,
    serve.add_token_parser,
)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (exit code 2), like every other bad input; the usage
    is one ``--help`` away."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; a parsed command's ``run(args)`` returns its exit code."""
    parser = _Parser(
        prog="attentionseg",
        description="AttentionSeg: attention-based medical image segmentation, metrics and datasets.",
    )
    parser.add_argument("--version", action="version", version=f"attentionseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in _COMMANDS:
        add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", InputWarning)
            default_show = warnings.showwarning

            def show(message, category, *rest, **kwargs):
                if issubclass(category, InputWarning):
                    print(f"attentionseg: warning: {message}", file=sys.stderr)
                else:
                    default_show(message, category, *rest, **kwargs)

            warnings.showwarning = show
            return args.run(args)
    except AttentionSegError as error:
        print(f"attentionseg: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("attentionseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
