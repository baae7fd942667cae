"""Command line for the vLLM test server (the logic lives in ``harness.lib.serving``).

Run with the main venv's python:

    python scripts/vllm_server.py setup                 # build .venv-vllm once (idempotent)
    python scripts/vllm_server.py serve --model DIR     # serve DIR on 127.0.0.1 until Ctrl-C
    python scripts/vllm_server.py serve                 # the same, for the embedded SmolLM2

``setup`` is what ``make serve-deps`` runs; the pytest fixture ``harness_vllm_server`` calls the same code.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from harness.lib.serving import ServingError, VllmServer, ensure_venv


def _setup(_: argparse.Namespace) -> int:
    try:
        python = ensure_venv()
    except ServingError as exc:
        print(f"vllm setup: {exc}", file=sys.stderr)
        return 1
    print(f"vLLM venv ready: {python}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        python = ensure_venv()
    except ServingError as exc:
        print(f"vllm setup: {exc}", file=sys.stderr)
        return 1
    model = args.model
    if model is None:
        from harness.lib.models import EMBEDDED, materialize_embedded

        model = materialize_embedded(EMBEDDED["smollm2-135m-instruct"])
    server = VllmServer(
        model,
        port=args.port,
        served_name=args.served_name,
        dtype=args.dtype,
        extra_args=args.extra,
        log_path=args.log,
        startup_timeout_s=args.timeout,
        python=python,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"starting vLLM on {server.url} (log: {args.log})", flush=True)
    try:
        with server:
            print(f"ready in {server.startup_s:.1f} s: {server.url} serves {server.served_name!r}", flush=True)
            while True:
                time.sleep(3600)
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create .venv-vllm (or $HARNESS_VLLM_VENV) if needed").set_defaults(func=_setup)
    serve = sub.add_parser("serve", help="run the server in the foreground")
    serve.add_argument("--model", type=Path, help="safetensors model folder (default: embedded SmolLM2)")
    serve.add_argument("--port", type=int, help="default: a free port")
    serve.add_argument("--served-name", default="smollm2")
    serve.add_argument("--dtype", default="float32")
    serve.add_argument("--log", type=Path, default=Path("vllm-server.log"))
    serve.add_argument("--timeout", type=float, default=300.0, help="startup timeout in seconds")
    serve.add_argument("extra", nargs="*", help="after --: extra arguments for vLLM's API server")
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
