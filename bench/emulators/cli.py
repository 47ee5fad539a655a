"""``sandbox-bench emulate PROVIDER[,PROVIDER...]|all``: run provider emulators in the foreground.

For each provider it prints ``# <provider> emulator on http://127.0.0.1:<port> (...)`` and the
``export`` lines that point ``sandbox-bench`` (the provider's adapter and SDK) at it, then
``# ready ...``; it runs until Ctrl-C or SIGTERM and then destroys every sandbox and checkpoint
the emulators hold. One provider is served in this process; several are served by one child
process each (``python -m bench.emulators NAME``, the same command without the rest of the
CLI), so that one emulator's load never delays another's answers, and this process relays the
signal to them and waits until each has cleaned up.

Options (the emulator's behaviour is described in :mod:`bench.emulators.toolkit`):
``--port`` (0: a free port each; N: N, N+1, ... in the order given), ``--state-dir`` (each
emulator keeps its sandboxes in ``D/<provider>``; default: a temporary directory, removed at
the end), ``--token`` (the credential every client must send; default: a random one, printed
in the export lines), ``--backend local|stub``, the latency model, the faults, ``--seed`` and
``--loop``, and the semantic faults (``--misbehave MODE[,MODE...]``, ``--wake-s``,
``--wake-after-s``). A bad option is one line on stderr and exit 2; an emulator that fails to
start is one line and exit 1.

``add_parser(subparsers)`` registers the subcommand with the main CLI; :func:`main` is the
same command for ``python -m bench.emulators``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.emulators.registry import (
    BACKENDS,
    FAULT_KINDS,
    LATENCY_MODES,
    MISBEHAVIOURS,
    PROTOCOLS,
    UnknownEmulator,
    fault_kind,
    misbehaviours,
    protocol_class,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

HELP = "run loopback emulators of the cloud providers (prints export lines)"
#: ``emulate --help``'s examples and what the command does, as the main CLI's other commands
#: have (bench/cli.py SUBCOMMANDS).
EXAMPLES = (
    "examples:\n"
    "  sandbox-bench emulate all\n"
    "  sandbox-bench emulate e2b,sprites --port 9000 --state-dir /tmp/emu\n"
    "  sandbox-bench emulate all --fault-rate 0.2 --seed 1\n"
    "  sandbox-bench emulate e2b --backend stub --latency-median-ms 100 --latency-p99-ms 300\n"
    "\n"
    "Each emulator prints its URL and the export lines that point sandbox-bench (the\n"
    "provider's adapter and its real SDK) at it; paste them in another shell and run\n"
    "'sandbox-bench run --providers ...'. It runs until Ctrl-C or SIGTERM, then destroys every\n"
    "sandbox and checkpoint it holds. Exit codes: 0 stopped cleanly, 1 an emulator failed,\n"
    "2 bad input.\n"
)


def _fault_kinds(text: str) -> list[str]:
    try:
        return [fault_kind(k) for k in text.split(",") if k.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _misbehaviours(text: str) -> list[str]:
    try:
        return list(misbehaviours(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 (seconds)")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


#: The emulator's behaviour options: flag -> argparse keywords. Children get the same values
#: back as flags (:func:`_behaviour_argv`), so the table is the one place they are declared.
BEHAVIOUR: dict[str, dict[str, Any]] = {
    "--backend": {"choices": BACKENDS, "default": "local",
                  "help": "local: real local sandboxes (root); stub: names only, no root"},
    "--latency-ms": {"type": float, "default": 0.0, "help": "constant added to every call"},
    "--latency-median-ms": {"type": float, "default": 0.0,
                            "help": "median of a seeded lognormal draw added per call"},
    "--latency-p99-ms": {"type": float, "default": 0.0, "help": "its 99th percentile"},
    "--stall-prob": {"type": _share, "default": 0.0,
                     "help": "share of time the whole server is frozen"},
    "--stall-ms": {"type": float, "default": 0.0, "help": "length of one freeze"},
    "--latency-match": {"default": "",
                        "help": 'only calls "METHOD /path" (trailing * = prefix) get latency'},
    "--latency-mode": {"choices": LATENCY_MODES, "default": "added",
                       "help": "added: hold, then handle; total: answer at arrival + latency"},
    "--fault-rate": {"type": _share, "default": 0.0, "help": "share of calls that fail"},
    "--fault-kinds": {"type": _fault_kinds, "default": list(FAULT_KINDS),
                      "help": f"comma-separated, of {','.join(FAULT_KINDS)} or a status"},
    "--hang-s": {"type": float, "default": 30.0, "help": "how long a 'hang' fault lasts"},
    "--seed": {"type": int, "default": 0, "help": "seeds faults, latency draws and stalls"},
    "--misbehave": {"type": _misbehaviours, "default": [], "metavar": "MODE[,MODE...]",
                    "help": "semantic faults (ok answers, wrong deeds): "
                    + "; ".join(f"{k}: {v}" for k, v in MISBEHAVIOURS.items())},
    "--wake-s": {"type": _seconds, "default": 3.0,
                 "help": "wake-slow: how long a wake takes"},
    "--wake-after-s": {"type": _seconds, "default": 1.0,
                       "help": "wake-slow: the idle after which a call wakes the sandbox"},
    "--loop": {"choices": ("asyncio", "uvloop"), "default": "asyncio",
               "help": "the emulator's event loop"},
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "providers",
        metavar="PROVIDER[,PROVIDER...]|all",
        help=f"which emulators ({', '.join(PROTOCOLS)}, or all)",
    )
    parser.add_argument("--port", type=_port, default=0, help="0: any free port")
    parser.add_argument("--state-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--token", help="credential clients must send (default: random)")
    for flag, keywords in BEHAVIOUR.items():
        parser.add_argument(flag, **keywords)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``emulate`` with the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "emulate",
        help=HELP,
        description=HELP[0].upper() + HELP[1:] + ".",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=cmd_emulate)
    return parser


def _say(line: str) -> None:
    print(line, flush=True)


def _error(message: str, code: int) -> int:
    print(f"sandbox-bench: error: {message}", file=sys.stderr, flush=True)
    return code


def _behaviour_argv(args: argparse.Namespace) -> list[str]:
    argv: list[str] = []
    for flag, keywords in BEHAVIOUR.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value != keywords["default"]:
            argv += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    return argv


def _names(text: str) -> list[str]:
    names = list(PROTOCOLS) if text.strip() == "all" else [n.strip() for n in text.split(",")]
    for name in names:
        protocol_class(name)  # UnknownEmulator for a name no emulator has
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"name each provider once: {text!r}")
    return names


def cmd_emulate(args: argparse.Namespace) -> int:
    """Run the emulators named in ``args`` until Ctrl-C/SIGTERM; the exit code."""
    from bench.emulators.toolkit import EmulatorState  # the server: only when one runs

    try:
        names = _names(args.providers)
        EmulatorState.from_args(args)  # every option checked before anything starts
        if args.port and args.port + len(names) - 1 > 65535:
            raise ValueError(f"ports {args.port}..{args.port + len(names) - 1} do not all exist")
        if args.loop == "uvloop":
            import uvloop  # noqa: F401 - only to fail early, with a clear message
    except (UnknownEmulator, ValueError) as exc:
        return _error(str(exc), EXIT_USAGE)
    except ImportError:
        return _error("--loop uvloop needs the uvloop package", EXIT_USAGE)
    args.token = args.token or secrets.token_hex(12)
    made = args.state_dir is None
    if made:
        args.state_dir = Path(tempfile.mkdtemp(prefix="sandbox-bench-emulate-"))
    try:
        if len(names) == 1:
            return _run(_serve_one(names[0], args), args.loop)
        return _run(_supervise(names, args, _say), args.loop)
    finally:
        if made:
            shutil.rmtree(args.state_dir, ignore_errors=True)


def _run(main: Any, loop: str) -> int:
    try:
        if loop == "uvloop":
            import uvloop

            return int(uvloop.run(main))
        return int(asyncio.run(main))
    except KeyboardInterrupt:  # asyncio.run has cancelled the work, so clean-up has run
        return 130


async def _serve_one(name: str, args: argparse.Namespace) -> int:
    from bench.emulators.toolkit import serve_emulator

    try:
        await serve_emulator(protocol_class(name), args, say=_say)
    except OSError as exc:
        return _error(f"{name} emulator: cannot listen on port {args.port}: {exc}", EXIT_USAGE)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback, for any start-up failure
        return _error(f"{name} emulator failed: {type(exc).__name__}: {exc}", EXIT_FAILED)
    return EXIT_OK


async def _supervise(names: Sequence[str], args: argparse.Namespace, say: Callable) -> int:
    """One child process per emulator; relay SIGINT/SIGTERM to them and wait for each."""
    from bench.emulators.control import read_header, start_process, stop_process
    from bench.emulators.toolkit import READY, announce

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    procs: dict[str, asyncio.subprocess.Process] = {}
    try:
        for index, name in enumerate(names):
            port = args.port + index if args.port else 0
            argv = ["--port", str(port), "--state-dir", str(args.state_dir),
                    "--token", args.token, *_behaviour_argv(args)]  # fmt: skip
            # Its own session: a Ctrl-C reaches it through us, once, after every start.
            procs[name] = await start_process(name, argv, new_session=True)
            assert procs[name].stdout is not None
            try:
                url = await read_header(procs[name].stdout, name, timeout_s=120)
            except (RuntimeError, TimeoutError) as exc:
                return _error(str(exc) or f"emulator {name} did not start in time", EXIT_FAILED)
            state = Path(args.state_dir) / name
            lines = announce(
                name, url, args.token, backend=args.backend, state_dir=state, pid=procs[name].pid
            )
            for line in lines:
                say(line)
        say(READY.format(what="the emulators", who="they", s=""))
        waits = {asyncio.ensure_future(p.wait()): name for name, p in procs.items()}
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({stopped, *waits}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        died = sorted(waits[t] for t in done if t in waits)
        if died:
            return _error(f"emulator {', '.join(died)} stopped unexpectedly", EXIT_FAILED)
        return EXIT_OK
    finally:
        await asyncio.gather(*(stop_process(p, grace_s=120) for p in procs.values()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"sandbox-bench emulate: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.emulators PROVIDER[,...]|all [options]``."""
    from bench.emulators.control import terminate_with_parent

    terminate_with_parent()
    parser = _Parser(
        prog="python -m bench.emulators",
        description=__doc__.split("\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return cmd_emulate(parser.parse_args(argv))


__all__ = ["add_parser", "cmd_emulate", "main"]
