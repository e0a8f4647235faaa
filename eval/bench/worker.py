"""One head or decoder measurement in a fresh process (on CPU, so each backend's peak memory is its own):
`python -m lsr.eval.bench.worker CONFIG_JSON`, started by `lsr.eval.bench.measure`; prints the row as JSON.
Its own module so that measure, head and decoder import one way (head and decoder use measure's helpers)."""
from __future__ import annotations

import json
import sys
from typing import Any


def measure(config: dict[str, Any]) -> dict[str, Any]:
    if config.get("bench") == "decoder":
        from .decoder import measure_decoder as run
    else:
        from .head import measure_head as run
    return run(config)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m lsr.eval.bench.worker CONFIG_JSON (use `lsr bench head|decoder` instead)")
    print(json.dumps(measure(json.loads(sys.argv[1]))))
