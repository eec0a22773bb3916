#!/usr/bin/env python3
"""reward.py's reward behind an HTTP endpoint in OpenRLHF's remote reward shape (standard library only).

POST {"query": [prompt + response, ...], "prompts": [...], "labels": [...]} -> {"rewards": [...]}.
Run it, then point a spec at it:  reward_function: {endpoint: http://127.0.0.1:5000/get_reward}
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from reward import reward


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rewards = [reward({"prompt": prompt, "response": query[len(prompt):]})
                       for query, prompt in zip(body["query"], body["prompts"])]
            out, status = json.dumps({"rewards": rewards}).encode(), 200
        except (ValueError, KeyError, TypeError) as error:
            out, status = f"bad request: {error}".encode(), 400
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
