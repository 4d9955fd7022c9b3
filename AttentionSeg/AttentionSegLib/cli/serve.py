"""``attentionseg serve`` (the segmentation server on Ray Serve) and ``attentionseg serve-token``
(the administrator's tokens file)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK

__all__ = ["add_serve_parser", "add_token_parser"]


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve the models of a folder over HTTP to many readers (Ray Serve; one GPU server or a cluster)",
        description="Serves every NAME.pt of --models at http://HOST:PORT/models/NAME: segmentation, clicks and "
        "the other prompts, uncertainty. Clients (segment --model URL, the Slicer module, the web page) send "
        "'Authorization: Bearer TOKEN'; tokens come from --tokens FILE (serve-token add) or, for one user, "
        "ATTENTIONSEG_TOKEN. Loopback only by default; for other machines put a TLS reverse proxy in front "
        "(README: The server). --cluster joins a running Ray cluster (ray start) instead of starting one here.",
    )
    parser.add_argument("--models", type=Path, required=True, metavar="DIR", help="folder of model files NAME.pt")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--tokens", type=Path, metavar="FILE", help="tokens file: USER sha256:HEX lines")
    parser.add_argument("--cluster", metavar="ADDRESS", help="Ray cluster address (HOST:6379 or auto)")
    parser.add_argument("--replicas", type=int, default=1, help="model replicas (default 1; one GPU each on GPUs)")
    parser.add_argument("--max-replicas", type=int, help="scale up to this many replicas under load")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs per replica (default 1)")
    parser.add_argument("--max-upload-mb", type=int, default=2048, help="largest request body (default 2048 MiB)")
    parser.add_argument("--cache-mb", type=int, default=4096, help="uploaded images kept (default 4096 MiB)")
    parser.set_defaults(run=run_serve)


def add_token_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve-token",
        help="add a user to a server's tokens file; prints the new token once",
        description="Makes a random token for USER, appends 'USER sha256:HEX' to FILE (created, mode 600) and "
        "prints the token: give it to the user (ATTENTIONSEG_TOKEN, or the Slicer module's settings). The file "
        "never holds a token, only its hash.",
    )
    parser.add_argument("action", choices=("add",))
    parser.add_argument("user", metavar="USER")
    parser.add_argument("--tokens", type=Path, required=True, metavar="FILE")
    parser.set_defaults(run=run_token)


def run_token(args: argparse.Namespace) -> int:
    from AttentionSegLib.serve.tokens import add_user

    token = add_user(args.tokens, args.user)
    print(token)
    print(f"added {args.user} to {args.tokens}; the token above is shown only now", file=sys.stderr)
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    from AttentionSegLib.serve.launch import ServerSettings, start_server, stop_server
    from AttentionSegLib.serve.tokens import server_tokens

    settings = ServerSettings(
        models=args.models,
        tokens=server_tokens(args.tokens),
        host=args.host,
        port=args.port,
        cluster=args.cluster,
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        replica_cpus=args.replica_cpus,
        max_upload_mb=args.max_upload_mb,
        cache_mb=args.cache_mb,
    )
    url = start_server(settings)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs its own SIGTERM handler
        signal.signal(signum, lambda *_: stop.set())
    names = sorted(path.stem for path in args.models.glob("*.pt"))
    users = sorted(set(settings.tokens.values()))
    print(
        f"serving {len(names)} model(s) at {url}/models/NAME ({', '.join(names)}); users: {', '.join(users)}",
        flush=True,
    )
    print("ready", flush=True)
    try:
        stop.wait()
    finally:
        stop_server()
        print("stopped", file=sys.stderr)
    return EXIT_OK
