"""The producer side of a peer benchmark, run as its own process by `benchmarks/peers.py`.

    python -m benchmarks.peer_apps.drive PEER prepare
    python -m benchmarks.peer_apps.drive PEER fill N
    python -m benchmarks.peer_apps.drive PEER rtt PAIRS WARMUP

Prints one JSON object on its last line of stdout: {"seconds": s} for fill, {"series":
{name: [ms, ...]}} for rtt, {} for prepare.
"""

from __future__ import annotations

import importlib
import json
import sys


def main(argv: list[str]) -> int:
    peer, command, *numbers = argv
    module = importlib.import_module(f"benchmarks.peer_apps.{peer}_app")
    answer: dict[str, object] = {}
    if command == "prepare":
        if hasattr(module, "prepare"):
            module.prepare()
    elif command == "fill":
        answer = {"seconds": module.fill(int(numbers[0]))}
    elif command == "rtt":
        answer = {"series": module.round_trips(int(numbers[0]), int(numbers[1]))}
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
