"""``attentionseg models``: the registered networks, their constraints and recipes, and the presets."""

from __future__ import annotations

import argparse
import json

from AttentionSegLib.cli.common import EXIT_OK

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list the networks: dimensions, default patch, constraints, parameters, deep supervision, recipe",
        description="Every registered network with its paper, supported dimensions, default patch size (array "
        "order), what every patch axis must be a multiple of, the parameter count of its default configuration, "
        "whether it has deep supervision and clinical input, and its default training recipe; then the presets.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.set_defaults(run=run)


def _preset_entry(preset) -> dict:
    return {
        "name": preset.name,
        "model": preset.model,
        "spatial_dims": preset.spatial_dims,
        "in_channels": preset.in_channels,
        "out_channels": preset.out_channels,
        "patch_size": list(preset.patch_size),
        "description": preset.description,
    }


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.evaluation.report import format_models_table
    from AttentionSegLib.models import describe_model, get_preset, list_models, list_presets

    models = [describe_model(name) for name in list_models()]
    presets = [get_preset(name) for name in list_presets()]
    if args.json:
        print(json.dumps({"models": models, "presets": [_preset_entry(p) for p in presets]}, indent=2))
    else:
        print(format_models_table(models, presets))
    return EXIT_OK
