"""``attentionseg web``: the browser front end (:mod:`AttentionSegLib.web`) on this machine.

One server process serves one user's scene. It binds to 127.0.0.1 unless ``--host`` says
otherwise, and then warns: the page can load files from and write files into its working folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.web import DEFAULT_MAX_UPLOAD_MB

__all__ = ["add_parser", "LOCAL_HOSTS"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "web",
        help="the browser front end: load, segment, click, correct, compare, train",
        description="Starts the AttentionSeg web page (trame-slicer views over the same MRML and logic as the "
        "Slicer modules) and prints its address. One server serves one user's scene.",
    )
    parser.add_argument(
        "images",
        nargs="*",
        type=Path,
        metavar="IMAGE",
        help="volume to load at start (a file or a DICOM series folder)",
    )
    parser.add_argument(
        "--reference", type=Path, metavar="SEG", help="reference (label map or DICOM SEG) to load at start"
    )
    parser.add_argument("--series", metavar="UID", help="Series Instance UID, when the DICOM folder holds several")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    parser.add_argument("--models", type=Path, metavar="DIR", help="a folder of model files besides the default one")
    parser.add_argument(
        "--server",
        metavar="URL",
        help="a segmentation server (attentionseg serve, http(s)://HOST:PORT) whose models join the list; "
        "the token comes from ATTENTIONSEG_TOKEN",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("attentionseg-web"),
        help="the server's working folder: uploads and exports (default ./attentionseg-web)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest upload in MB (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for path in args.images:
        if not path.exists():
            raise AttentionSegError(f"{path}: no such file or DICOM series folder")
    if args.reference and not args.reference.is_file():
        raise AttentionSegError(f"{args.reference}: no such file")
    if args.reference and not args.images:
        raise AttentionSegError("--reference needs an IMAGE to go with it")
    if args.max_upload_mb <= 0:
        raise AttentionSegError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.server and not args.server.lower().startswith(("http://", "https://")):
        raise AttentionSegError(f"--server {args.server}: give the server's address, http(s)://HOST:PORT")
    if not 0 <= args.port <= 65535:
        raise AttentionSegError(f"--port must be 0-65535, got {args.port}")
    if args.host not in LOCAL_HOSTS:
        print(
            f"attentionseg web: warning: listening on {args.host}: anyone who reaches this address can load "
            "files into and download segmentations from this server's scene",
            file=sys.stderr,
        )
    try:
        from AttentionSegLib.web.app import AttentionSegWebApp
    except ImportError as error:  # trame-slicer is an optional part of the environment
        raise AttentionSegError(f"the web front end needs trame-slicer ({error.name} is missing)") from None

    os.environ.setdefault("TRAME_SERVER", "1")  # never open a browser on the server's machine
    # Views render off-screen; EGL (Mesa on the CPU, or the GPU's) needs no X display.
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    sys.argv = sys.argv[:1]  # trame parses sys.argv itself: give it only what we pass below
    app = AttentionSegWebApp(
        workspace_folder=args.workdir,
        models_folder=args.models,
        max_upload_mb=args.max_upload_mb,
        images=[str(path) for path in args.images],
        reference=str(args.reference) if args.reference else None,
        series_uid=args.series,
        server_url=args.server,
    )

    def announce(**_):
        print(f"AttentionSeg web: http://{args.host}:{app.server.port}/", flush=True)

    app.server.controller.on_server_ready.add(announce)
    app.server.start(host=args.host, port=args.port, open_browser=False, timeout=0, show_connection_info=False)
    return EXIT_OK
