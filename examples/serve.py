"""A JSON inference endpoint around a fastdl plan, on the standard library's HTTP server.

    python examples/serve.py model.plan.safetensors --port 8080
    python examples/serve.py model.onnx --port 8080      # a model trained elsewhere
    curl -d '{"inputs": [[[[0.0, ...]]]]}' localhost:8080/predict

``POST /predict`` takes ``{"inputs": <nested list of shape (N, C, H, W)>}`` and answers
``{"logits": [[...], ...], "classes": [...]}`` (a model with several outputs, such as
an FPN's maps: ``{"outputs": [<nested list>, ...]}``); ``GET /health`` answers
``{"status": "ok"}``. Every other answer is a JSON object ``{"error": "<message>"}``:

    400  Content-Length missing, negative or not a number; body not JSON (NaN and
         Infinity tokens included); no "inputs"; inputs not numbers or not (N, C, H, W)
    404  unknown path                  405  wrong method for the path (see Allow)
    408  the request did not arrive within --timeout seconds
    411  Transfer-Encoding (chunked) bodies: send a Content-Length instead
    413  body larger than --max-body-mb     500  the plan failed (traceback on stderr)
    503  all --threads handler threads busy (Retry-After: 1)

NaN and +-inf logits are sent as ``null`` (JSON has no such numbers), and the class
of a row holding a NaN is ``null``.

One request per connection. Each connection has --timeout seconds, in all, to send
its request (a client that stalls or drips bytes is cut off) and the same to take
the answer. At most --threads requests are handled at once: a connection that finds
them all busy (for 50 ms) is answered 503. The listen backlog is 4 x --threads (at
least 64), so a burst of connections waits in the kernel rather than being refused.

``--selftest N`` starts the server on a loopback port (timeout 1 s unless given),
sends N requests from 8 client threads and checks every answer against the plan
called directly, prints latency percentiles, then checks the error answers
(malformed requests, bad Content-Length, oversized and chunked bodies, wrong
shapes and types, NaN output), and that stalled connections fill the server
(503), are closed after the timeout, and free it again. Exit status 1 on any failure.
The plan is shared by all handler threads.
"""
import argparse
import collections
import io
import json
import re
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np

from fastdl import deploy

MAX_BODY = 64 * 1024 * 1024
_ROUTES = {"/predict": ("POST",), "/health": ("GET", "HEAD")}


class _Reject(Exception):
    """An answer other than 200: status, message, extra headers."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, tuple(headers)


def _no_constants(name):
    raise ValueError("%s is not a JSON number" % name)


def _shape_text(shape):
    return "(%s)" % ", ".join(str(n) for n in shape)


def parse_inputs(body, input_shape, dtype=np.float32):
    """The request body (bytes) as an ndarray of shape (N,) + input_shape, or _Reject(400)."""
    try:
        request = json.loads(body, parse_constant=_no_constants)
    except RecursionError:
        raise _Reject(400, "the body is not valid JSON: nested too deeply") from None
    except ValueError as error:     # UnicodeDecodeError and JSONDecodeError included
        raise _Reject(400, "the body is not valid JSON: %s" % error) from None
    if not isinstance(request, dict) or "inputs" not in request:
        raise _Reject(400, 'the body must be a JSON object with an "inputs" array')
    expected = "(N, %s) with N >= 1" % ", ".join(str(n) for n in input_shape)
    try:
        array = np.array(request["inputs"])
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise _Reject(400, '"inputs" must be a rectangular nested list of numbers of shape '
                      '%s: %s' % (expected, error)) from None
    if array.dtype.kind not in "iuf":
        received = {"U": "strings", "b": "booleans"}.get(
            array.dtype.kind, "nulls, objects, numbers too large or ragged lists")
        raise _Reject(400, '"inputs" must hold numbers only (dtype float32 or int); '
                      'received %s (dtype %s)' % (received, array.dtype))
    if array.ndim != 1 + len(input_shape) or array.shape[1:] != tuple(input_shape) \
            or array.shape[0] < 1:
        raise _Reject(400, '"inputs" has shape %s; the model expects %s'
                      % (_shape_text(array.shape), expected))
    with np.errstate(over="ignore"):    # beyond float32's range: inf, like any cast
        return array.astype(dtype)


def _finite_rows(logits):
    """``logits`` as nested lists, non-finite values as null (strict JSON has none)."""
    rows = logits.tolist()
    finite = np.isfinite(logits)
    if not finite.all():
        for index in np.argwhere(~finite):
            cell = rows
            for i in index[:-1]:
                cell = cell[i]
            cell[index[-1]] = None
    return rows


def prediction(logits):
    """The 200 answer for a plan's result: ``logits`` (an ndarray) with their classes,
    or, from a plan with several outputs (a tuple), the ``outputs``; non-finite values
    as null, strict JSON only."""
    if isinstance(logits, tuple):
        return {"outputs": [_finite_rows(np.asarray(output)) for output in logits]}
    logits = np.asarray(logits)
    rows = _finite_rows(logits)
    answer = {"logits": rows}
    if logits.ndim == 2:
        classes = logits.argmax(axis=1).tolist()
        for row in np.flatnonzero(np.isnan(logits).any(axis=1)):
            classes[row] = None
        answer["classes"] = classes
    return answer


class _DeadlineReader(io.RawIOBase):
    """Socket reads that fail once ``deadline`` (time.monotonic()) has passed."""

    def __init__(self, sock, deadline):
        super().__init__()
        self.sock, self.deadline = sock, deadline

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took longer than its deadline")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # with Connection: close on every answer
    server_version = "fastdl-serve"
    disable_nagle_algorithm = True      # headers and body are two writes

    def setup(self):
        self.timeout = self.server.request_timeout
        super().setup()
        self.rfile.close()  # the request, line to body, must arrive before one deadline
        self.rfile = io.BufferedReader(
            _DeadlineReader(self.connection, time.monotonic() + self.timeout))
        self._expects_continue = False

    def handle_expect_100(self):
        self._expects_continue = True   # sent once the Content-Length is accepted
        return True

    def _handle(self):
        try:
            try:
                path = urlsplit(self.path).path
                allowed = _ROUTES.get(path)
                if allowed is None:
                    raise _Reject(404, "no such path %r: POST /predict or GET /health" % path)
                if self.command not in allowed:
                    raise _Reject(405, "%s takes %s, not %s" % (path, " or ".join(allowed),
                                                                self.command),
                                  [("Allow", ", ".join(allowed))])
                if path == "/health":
                    self._reply(200, {"status": "ok"})
                    return
                inputs = parse_inputs(self._read_body(), self.server.plan.input_shape,
                                      getattr(self.server.plan, "dtype", np.float32))
                answer = prediction(self.server.plan(inputs))
            except _Reject:
                raise
            except OSError:
                raise
            except Exception:
                traceback.print_exc()
                raise _Reject(500, "internal error: the model failed on this request") \
                    from None
            self._reply(200, answer)
        except _Reject as reject:
            self._reply(reject.status, {"error": reject.message}, reject.headers)
        except OSError:     # the client went away, or stalled mid-body past the deadline
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _read_body(self):
        if "Transfer-Encoding" in self.headers:
            raise _Reject(411, "Transfer-Encoding %r is not accepted: send the body with "
                          "a Content-Length" % self.headers["Transfer-Encoding"])
        values = self.headers.get_all("Content-Length") or []
        if not values:
            raise _Reject(400, "a Content-Length header is required")
        given = sorted({value.strip() for value in values})
        if len(given) != 1 or not re.fullmatch(r"[0-9]{1,18}", given[0]):
            raise _Reject(400, "Content-Length must be one non-negative integer; received %s"
                          % ", ".join(repr(value) for value in values))
        length = int(given[0])
        if length > self.server.max_body:
            raise _Reject(413, "the body is %d bytes; the limit is %d"
                          % (length, self.server.max_body))
        if self._expects_continue:
            self.send_response_only(100)
            self.end_headers()
        chunks, left = [], length
        try:
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    raise _Reject(400, "the body ended after %d of the %d bytes of its "
                                  "Content-Length" % (length - left, length))
                chunks.append(chunk)
                left -= len(chunk)
        except TimeoutError:
            raise _Reject(408, "the request did not arrive within %g s"
                          % self.server.request_timeout) from None
        return b"".join(chunks)

    def _reply(self, status, payload, headers=()):
        body = json.dumps(payload, allow_nan=False).encode()
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # garbage or a 0.9 line: answer with headers
            self.request_version = "HTTP/1.0"
        try:
            self.connection.settimeout(self.server.request_timeout)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass

    def send_error(self, code, message=None, explain=None):
        # the standard library's own errors (bad request line, headers, 501) as JSON too
        self._reply(code, {"error": message or HTTPStatus(code).phrase})

    def log_message(self, *args):
        pass


_BUSY = json.dumps({"error": "server busy: every handler thread is taken; retry later"}
                   ).encode()
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
         % (len(_BUSY), _BUSY))


class PlanServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with at most ``threads`` handler threads, 503 beyond.

    ``timeout`` (seconds) bounds each connection's request and answer; the listen
    backlog is 4 * threads (at least 64).
    """
    daemon_threads = True

    def __init__(self, address, plan, threads=32, timeout=10.0, max_body=MAX_BODY):
        self.plan, self.request_timeout, self.max_body = plan, float(timeout), int(max_body)
        self.max_threads = int(threads)
        self.request_queue_size = max(64, 4 * self.max_threads)
        self._slots = threading.BoundedSemaphore(self.max_threads)
        self._count_lock = threading.Lock()
        self.active = 0             # connections being handled now
        self.refused = 0            # connections answered 503
        self._refused_at = -1e9
        self._lingering = collections.deque()   # (close at, socket) of 503 answers
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        # a handler that just answered frees its slot a moment later: wait that moment,
        # unless connections are being refused already (a flood must not stall accept())
        busy = time.monotonic() - self._refused_at < 1.0
        if not self._slots.acquire(timeout=0.0 if busy else 0.05):
            self._refused_at = time.monotonic()
            self._refuse(request)
            return
        with self._count_lock:
            self.active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self):
        with self._count_lock:
            self.active -= 1
        self._slots.release()

    def _refuse(self, sock):
        self.refused += 1
        try:
            sock.setblocking(False)
            sock.send(_BUSY)    # small: fits the socket's buffer, never blocks
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        # close a second later, after reading what the client sent meanwhile: closing
        # with unread bytes would reset the connection before the 503 is read
        self._lingering.append((time.monotonic() + 1.0, sock))
        while len(self._lingering) > 1024:
            _drain_and_close(self._lingering.popleft()[1])

    def service_actions(self):
        super().service_actions()
        now = time.monotonic()
        while self._lingering and self._lingering[0][0] <= now:
            _drain_and_close(self._lingering.popleft()[1])

    def server_close(self):
        super().server_close()
        while self._lingering:
            _drain_and_close(self._lingering.popleft()[1])


def _drain_and_close(sock):
    try:
        for _ in range(16):
            if not sock.recv(65536):
                break
    except OSError:
        pass
    sock.close()


def make_server(plan, host="127.0.0.1", port=0, threads=32, timeout=10.0, max_body=MAX_BODY):
    """A :class:`PlanServer` for ``plan`` bound to ``(host, port)``; call serve_forever()."""
    return PlanServer((host, port), plan, threads=threads, timeout=timeout, max_body=max_body)


# ------------------------------------------------------------------------ self-test
def _strict_json(raw):
    return json.loads(raw, parse_constant=_no_constants)


def read_until_closed(sock):
    """Every byte ``sock`` receives until its peer closes the connection."""
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return answer
        answer += chunk


def split_response(answer):
    """``(status, headers, body)`` of one HTTP response's bytes (``body`` as bytes)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def raw_request(port, data, timeout=10.0):
    """Send ``data`` (bytes) on a fresh loopback connection; (status, headers, payload)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = read_until_closed(sock)
    status, headers, body = split_response(answer)
    assert len(body) == int(headers["Content-Length"]), answer
    return status, headers, _strict_json(body)


def _post(body, headers=None, path="/predict"):
    headers = {"Content-Length": str(len(body))} if headers is None else headers
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % path.encode()
            + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items())
            + b"\r\n" + body)


def _error_cases(plan, max_body):
    shape = tuple(plan.input_shape)
    good = json.dumps({"inputs": np.zeros((1,) + shape).tolist()}).encode()
    wrong = json.dumps({"inputs": np.zeros((1, shape[0] + 1) + shape[1:]).tolist()}).encode()
    text = json.dumps({"inputs": np.full((1,) + shape, "a").tolist()}).encode()
    return [  # (what, request bytes, status, words the error message must hold)
        ("unknown path", b"GET /nope HTTP/1.1\r\n\r\n", 404, "no such path"),
        ("GET /predict", b"GET /predict HTTP/1.1\r\n\r\n", 405, "POST"),
        ("POST elsewhere", _post(good, path="/other"), 404, "no such path"),
        ("garbage request line", b"HELLO\r\n\r\n", 400, "request"),
        ("unknown method", b"BREW /predict HTTP/1.1\r\n\r\n", 501, "BREW"),
        ("not JSON", _post(b"{inputs: 1"), 400, "not valid JSON"),
        ("NaN token", _post(b'{"inputs": NaN}'), 400, "NaN"),
        ("no inputs", _post(b'{"x": 1}'), 400, '"inputs"'),
        ("a JSON list", _post(b"[1, 2]"), 400, '"inputs"'),
        ("wrong shape", _post(wrong), 400, _shape_text((1, shape[0] + 1) + shape[1:])),
        ("strings", _post(text), 400, "strings"),
        ("ragged", _post(b'{"inputs": [[1], [1, 2]]}'), 400, "rectangular"),
        ("negative Content-Length", _post(good, {"Content-Length": "-1"}), 400,
         "non-negative"),
        ("non-numeric Content-Length", _post(good, {"Content-Length": "12a"}), 400,
         "non-negative"),
        ("missing Content-Length", _post(good, {}), 400, "Content-Length"),
        ("two Content-Lengths", _post(good, {"Content-Length": "%d" % len(good),
                                            "content-length": "3"}), 400, "one"),
        ("chunked", _post(b"5\r\nhello\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"}), 411,
         "Content-Length"),
        ("oversized", _post(b"", {"Content-Length": str(max_body + 1)}), 413, "limit"),
    ]


def _check_errors(server, plan):
    port, failures = server.server_address[1], []
    cases = _error_cases(plan, server.max_body)
    for what, data, status, words in cases:
        try:
            got, _, payload = raw_request(port, data)
        except Exception as error:  # noqa: BLE001  reported, not raised
            failures.append("%s: %r" % (what, error))
            continue
        if got != status or words not in payload.get("error", ""):
            failures.append("%s: expected %d %r, got %d %r" % (what, status, words, got,
                                                               payload))
    # NaN output: inputs beyond float32's range are inf, so the logits are NaN/inf
    x = np.full((1,) + tuple(plan.input_shape), 1e300)
    try:
        status, _, payload = raw_request(port, _post(json.dumps({"inputs": x.tolist()}
                                                                ).encode()))
        with np.errstate(over="ignore"):
            references = _outputs(plan(x.astype(np.float32)))
        nulls = [np.vectorize(lambda v: v is None, otypes=[bool])(np.array(got, dtype=object))
                 for got in _answered(payload)]
        if status != 200 or len(nulls) != len(references) or not all(
                (null == ~np.isfinite(reference)).all()
                for null, reference in zip(nulls, references)):
            failures.append("NaN output: expected null where the logits are not finite, "
                            "got %d %r" % (status, payload))
    except Exception as error:  # noqa: BLE001
        failures.append("NaN output: %r" % error)
    print("%d error answers checked, %d wrong" % (len(cases) + 1, len(failures)))
    return failures


def _check_stalls(server, plan):
    """Fill every handler thread with stalled connections: 503, then closed on time."""
    port, failures, timeout = server.server_address[1], [], server.request_timeout
    began = time.monotonic()
    stalled = []
    for i in range(server.max_threads):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout + 5)
        if i == 1:
            sock.sendall(b"POST /predict HT")                              # mid-line
        elif i == 2:
            sock.sendall(_post(b"{}", {"Content-Length": "100"}))           # short body
        elif i == 3:
            sock.sendall(b"POST /predict HTTP/1.1\r\nContent-Length: 5\r\n")  # mid-headers
        stalled.append(sock)
    while server.active < server.max_threads and time.monotonic() - began < timeout:
        time.sleep(0.01)
    try:
        status, headers, payload = raw_request(port, _post(b"{}"))
        if status != 503 or headers.get("Retry-After") != "1" or "busy" not in payload["error"]:
            failures.append("saturated: expected 503, got %d %r" % (status, payload))
    except Exception as error:  # noqa: BLE001
        failures.append("saturated: %r" % error)
    latest = 0.0
    for i, sock in enumerate(stalled):
        try:
            answer = read_until_closed(sock)
            latest = max(latest, time.monotonic() - began)
            if i == 2 and not answer.startswith(b"HTTP/1.1 408"):
                failures.append("stalled body: expected 408, got %r" % answer[:60])
        except socket.timeout:
            failures.append("stalled connection %d still open after %g s" % (i, timeout + 5))
        finally:
            sock.close()
    if latest > timeout + 1.5:
        failures.append("stalled connections closed after %.2f s, timeout %g s"
                        % (latest, timeout))
    while server.active and time.monotonic() - began < 2 * timeout + 5:
        time.sleep(0.01)
    good = json.dumps({"inputs": np.zeros((1,) + tuple(plan.input_shape)).tolist()}).encode()
    status, _, payload = raw_request(port, _post(good))
    if status != 200:
        failures.append("after the stalls: expected 200, got %d %r" % (status, payload))
    print("%d stalled connections: 503 while they held every thread, all closed after "
          "%.2f s (timeout %g s)" % (len(stalled), latest, timeout))
    return failures


def _outputs(result):
    """A plan's result as a list of arrays (one, or one per output)."""
    return [np.asarray(r) for r in result] if isinstance(result, tuple) else [result]


def _answered(payload):
    """The arrays of a 200 answer (its logits, or each of its outputs)."""
    return payload["outputs"] if "outputs" in payload else [payload["logits"]]


def selftest(plan, requests, clients=8, threads=16, timeout=1.0):
    server = make_server(plan, "127.0.0.1", 0, threads=threads, timeout=timeout)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    url = "http://127.0.0.1:%d/predict" % server.server_address[1]
    rng = np.random.default_rng(0)
    latencies, failures, lock = [], [], threading.Lock()

    def client(count):
        for _ in range(count):
            with lock:
                x = rng.normal(size=(1,) + tuple(plan.input_shape)).astype(np.float32)
            began = time.perf_counter()
            request = urllib.request.Request(url, json.dumps({"inputs": x.tolist()}).encode())
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = _strict_json(response.read())
            except (urllib.error.URLError, OSError, ValueError) as error:
                failures.append("request failed: %r" % error)
                continue
            latencies.append(time.perf_counter() - began)
            expected = _outputs(plan(x))
            got = _answered(answer)
            if len(got) != len(expected) or not all(
                    np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, expected)):
                failures.append("wrong answer: %r" % answer)
    counts = [requests // clients + (i < requests % clients) for i in range(clients)]
    workers = [threading.Thread(target=client, args=(count,)) for count in counts]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        p50, p99 = np.percentile(latencies or [0.0], [50, 99]) * 1e3
        print("%d requests, %d wrong answers, latency p50 %.2f ms p99 %.2f ms"
              % (len(latencies), len(failures), p50, p99))
        failures += _check_errors(server, plan)
        failures += _check_stalls(server, plan)
    finally:
        server.shutdown()
        server.server_close()
    for failure in failures:
        print("FAIL", failure)
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("plan", help="a fastdl plan file, or an ONNX model (.onnx)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=None,
                        help="requests handled at once; more get 503 (default 32; 16 "
                             "with --selftest)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a connection has to send its request and to take "
                             "the answer (default 10; 1 with --selftest)")
    parser.add_argument("--max-body-mb", type=float, default=MAX_BODY / 2 ** 20)
    parser.add_argument("--selftest", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    plan = deploy.open_model(args.plan, warmup=True)   # a plan file or an .onnx model
    if args.selftest:
        return selftest(plan, args.selftest, threads=args.threads or 16,
                        timeout=1.0 if args.timeout is None else args.timeout)
    server = make_server(plan, args.host, args.port, threads=args.threads or 32,
                         timeout=10.0 if args.timeout is None else args.timeout,
                         max_body=int(args.max_body_mb * 2 ** 20))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
