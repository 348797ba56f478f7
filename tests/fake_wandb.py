"""A local stand-in for the W&B server, for a real ``wandb agent`` with no network.

W&B has no offline sweep agent: ``wandb agent`` (``wandb/wandb_agent.py``) asks the server for the
sweep (``SweepWithRuns``), registers itself (``CreateAgent``) and polls ``Heartbeat`` for run
commands, all as GraphQL over HTTP. This server answers those calls (and ``Viewer``, the credential
check) for one sweep, handing out one run; everything else gets an empty answer. The agent's
code, its service process and the program it launches are all real.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "0" * 40  # any 40 characters: the stand-in accepts every key


class FakeSweepServer:
    """Serves ``sweep_config`` (the sweep YAML, as text) under ``sweep_id`` and hands the first
    heartbeat one ``run`` command: ``run_id`` with ``parameters`` (name -> value), as W&B's
    controller would. ``operations`` lists the GraphQL operations asked, in order."""

    def __init__(self, sweep_id: str, sweep_config: str, run_id: str, parameters: dict[str, Any]) -> None:
        self.sweep_id, self.sweep_config, self.run_id, self.parameters = sweep_id, sweep_config, run_id, parameters
        self.operations: list[tuple[str, dict]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeSweepServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, query: str, variables: dict) -> dict:
        """The ``data`` of the answer to one GraphQL request."""
        name = query.split("{")[0].split("(")[0].split()[-1] if query.strip() else ""
        self.operations.append((name, variables))
        if name == "Viewer":
            return {"viewer": {"id": "u1", "entity": "entity", "username": "user", "email": None, "flags": "{}",
                               "teams": {"edges": []}}}  # fmt: skip
        if name == "SweepWithRuns":
            if variables.get("sweep") != self.sweep_id:
                return {"project": None}
            return {"project": {"sweep": {
                "id": self.sweep_id, "name": self.sweep_id, "method": "bayes", "state": "RUNNING",
                "description": None, "config": self.sweep_config, "createdAt": None, "heartbeatAt": None,
                "updatedAt": None, "earlyStopJobRunning": False, "bestLoss": None, "controller": None,
                "scheduler": None, "runs": {"edges": []},
            }}}  # fmt: skip
        if name == "CreateAgent":
            return {"createAgent": {"agent": {"id": "agent-1"}}}
        if name == "Heartbeat":
            first = sum(op == "Heartbeat" for op, _ in self.operations) == 1
            run = {"type": "run", "id": "command-1", "run_id": self.run_id, "program": "harness/train.py",
                   "args": {key: {"value": value} for key, value in self.parameters.items()}}  # fmt: skip
            return {"agentHeartbeat": {"agent": {"id": "agent-1"}, "commands": json.dumps([run] if first else [])}}
        return {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    request = json.loads(body)
                except ValueError:  # the SDK's telemetry (OpenTelemetry protobuf): not GraphQL
                    request = {}
                query = request.get("query", "") if isinstance(request, dict) else ""
                data = server.answer(query, request.get("variables") or {}) if query else {}
                reply = json.dumps({"data": data}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:  # quiet
                pass

        return Handler
