"""A JSON inference endpoint around a fastdl plan, on the standard library's HTTP server.

    python examples/serve.py model.plan.safetensors --port 8080
    curl -d '{"inputs": [[[[0.0, ...]]]]}' localhost:8080/predict

``--selftest N`` starts the server on a loopback port, sends N requests from
8 client threads, checks every answer against the plan called directly, prints
latency percentiles and exits. The plan is shared by all handler threads.
"""
import argparse
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from fastdl import deploy


def make_handler(plan):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/predict":
                self.send_error(404)
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                if length > 64 * 1024 * 1024:
                    raise ValueError("request too large")
                inputs = np.asarray(json.loads(self.rfile.read(length))["inputs"],
                                    dtype=np.float32)
                logits = plan(inputs)
                body = json.dumps({"logits": logits.tolist(),
                                   "classes": logits.argmax(axis=1).tolist()}).encode()
                self.send_response(200)
            except (ValueError, KeyError, TypeError) as error:
                body = json.dumps({"error": str(error)}).encode()
                self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    return Handler


def selftest(plan, requests, threads=8):
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(plan))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = "http://127.0.0.1:%d/predict" % server.server_address[1]
    rng = np.random.default_rng(0)
    latencies, failures = [], []

    def client(count):
        for _ in range(count):
            x = rng.normal(size=(1,) + plan.input_shape).astype(np.float32)
            began = time.perf_counter()
            request = urllib.request.Request(url, json.dumps({"inputs": x.tolist()}).encode())
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            latencies.append(time.perf_counter() - began)
            if not np.allclose(answer["logits"], plan(x), rtol=1e-5, atol=1e-6):
                failures.append(answer)
    workers = [threading.Thread(target=client, args=(requests // threads,))
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    server.shutdown()
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
    print("%d requests, %d wrong answers, latency p50 %.2f ms p99 %.2f ms"
          % (len(latencies), len(failures), p50, p99))
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("plan")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--selftest", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    plan = deploy.load(args.plan, warmup=True)
    if args.selftest:
        return selftest(plan, args.selftest)
    ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(plan)).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
