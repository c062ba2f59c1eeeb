"""A scripted OpenAI-compatible server that dies (exit code 3) after --die-after seconds."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

from bench.scripted_server import Scenario, ScriptedServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--die-after", type=float, required=True)
    parser.add_argument("--scenario", default="{}")
    args = parser.parse_args()
    raw = json.loads(args.scenario)
    scenario = Scenario(**{k: tuple(v) if k in ("ttft_ms", "gap_ms") else v for k, v in raw.items()})
    server = ScriptedServer(scenario, "127.0.0.1", args.port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(args.die_after)
    os._exit(3)


if __name__ == "__main__":
    main()
