"""``attentionseg models``: the model files ready to use (the shipped ones first, then the models
folder's), then the registered networks, their constraints and recipes, and the presets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list the model files ready to use (shipped ones first) and the networks one can train",
        description="The model files ready to use: those that ship with the extension (the promptable "
        "generalist, which click-to-segment picks by default), then those of --folder and of the models folder "
        "($ATTENTIONSEG_MODELS_DIR or ~/.attentionseg/models). Then every registered network with its paper, "
        "supported dimensions, default patch size (array order), what every patch axis must be a multiple of, "
        "the parameter count of its default configuration, "
        "whether it has deep supervision and clinical input, and its default training recipe; then the presets.",
    )
    parser.add_argument("--folder", type=Path, help="also list the model files of this folder")
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


def model_file_entries(folder: Path | None = None) -> list[dict]:
    """One entry per model file ready to use, in the order the front ends list them."""
    from AttentionSegLib.errors import AttentionSegError
    from AttentionSegLib.inference.model_file import load_model_file
    from AttentionSegLib.inference.model_store import model_display_names, models_in_folders, shipped_models_folder

    paths = models_in_folders(folder)
    shipped = shipped_models_folder().resolve()
    entries = []
    for path, name in zip(paths, model_display_names(paths)):
        entry = {"name": name, "path": str(path), "shipped": path.resolve().parent == shipped}
        try:
            model = load_model_file(path)
        except AttentionSegError as error:
            entry.update(kind="unreadable", problem=str(error))
        else:
            generalist = model.training.get("kind") == "promptable-generalist"
            entry.update(
                kind="promptable generalist" if generalist else "interactive" if model.is_interactive else "automatic",
                network=model.network["name"],
                labels=model.object_labels if model.is_interactive else model.label_names,
            )
        entries.append(entry)
    return entries


def _model_files_table(entries: list[dict]) -> str:
    if not entries:
        return "Model files: none (train one with attentionseg train)"
    lines = ["Model files (the first is what click-to-segment and the front ends select by default):"]
    for entry in entries:
        where = "shipped" if entry["shipped"] else entry["path"]
        lines.append(f"  {entry['name']:<28} {entry['kind']:<22} {where}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.evaluation.report import format_models_table
    from AttentionSegLib.models import describe_model, get_preset, list_models, list_presets

    models = [describe_model(name) for name in list_models()]
    presets = [get_preset(name) for name in list_presets()]
    files = model_file_entries(args.folder)
    if args.json:
        document = {"model_files": files, "models": models, "presets": [_preset_entry(p) for p in presets]}
        print(json.dumps(document, indent=2))
    else:
        print(_model_files_table(files) + "\n\nNetworks:\n" + format_models_table(models, presets))
    return EXIT_OK
