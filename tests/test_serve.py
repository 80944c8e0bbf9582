"""examples/serve.py as a service: JSON for every answer, bounded threads, timeouts."""
import importlib.util
import json
import os
import socket
import threading
import time

import numpy as np
import pytest

import fastdl
from fastdl import deploy
from fastdl.models import lenet5

SERVE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "serve.py")


def _load_serve():
    spec = importlib.util.spec_from_file_location("fastdl_example_serve", SERVE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serve = _load_serve()


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    fastdl.manual_seed(0)
    path = tmp_path_factory.mktemp("serve") / "plan.safetensors"
    deploy.compile(lenet5(input_size=8), np.zeros((1, 1, 8, 8), np.float32)).save(path)
    return path


@pytest.fixture(scope="module")
def plan(plan_path):
    return deploy.load(plan_path, warmup=True)


def _start(plan, **options):
    server = serve.make_server(plan, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return server


def _stop(server):
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(plan):
    server = _start(plan, threads=4, timeout=1.0, max_body=1 << 20)
    yield server
    _stop(server)


def _strict(raw):
    def refuse(name):
        raise AssertionError("non-JSON token %s in %r" % (name, raw))
    return json.loads(raw, parse_constant=refuse)


def _exchange(port, data, close_write=False):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        answer = serve.read_until_closed(sock)
    status, headers, body = serve.split_response(answer)
    headers = {name.lower(): value for name, value in headers.items()}
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    return status, headers, _strict(body)


def _post(body, headers=None, path="/predict"):
    if headers is None:
        headers = [("Content-Length", str(len(body)))]
    return (("POST %s HTTP/1.1\r\nHost: x\r\n" % path
             + "".join("%s: %s\r\n" % pair for pair in headers) + "\r\n").encode() + body)


def _inputs(x):
    return json.dumps({"inputs": np.asarray(x).tolist()}).encode()


GOOD = _inputs(np.zeros((1, 1, 8, 8)))


ERROR_CASES = [
    ("unknown path", b"GET /nope HTTP/1.1\r\n\r\n", 404, "no such path"),
    ("POST elsewhere", _post(GOOD, path="/elsewhere"), 404, "no such path"),
    ("GET predict", b"GET /predict HTTP/1.1\r\n\r\n", 405, "POST"),
    ("DELETE predict", b"DELETE /predict HTTP/1.1\r\n\r\n", 405, "POST"),
    ("garbage line", b"NONSENSE\r\n\r\n", 400, "request"),
    ("bad JSON", _post(b"{not json"), 400, "not valid JSON"),
    ("not UTF-8", _post(b"\xff\xfe\xfa"), 400, "not valid JSON"),
    ("Infinity token", _post(b'{"inputs": [[[[Infinity]]]]}'), 400, "Infinity"),
    ("no inputs", _post(b'{"input": []}'), 400, '"inputs"'),
    ("JSON string", _post(b'"inputs"'), 400, '"inputs"'),
    ("nested too deep", _post(b"[" * 100000 + b"]" * 100000), 400, "not valid JSON"),
    ("wrong channels", _post(_inputs(np.zeros((1, 3, 8, 8)))), 400,
     "shape (1, 3, 8, 8); the model expects (N, 1, 8, 8)"),
    ("no batch axis", _post(_inputs(np.zeros((1, 8, 8)))), 400,
     "shape (1, 8, 8); the model expects (N, 1, 8, 8)"),
    ("empty batch", _post(_inputs(np.zeros((0, 1, 8, 8)))), 400, "N >= 1"),
    ("strings", _post(_inputs(np.full((1, 1, 8, 8), "1.5"))), 400, "strings"),
    ("null", _post(b'{"inputs": [[[[1, null]]]]}'), 400, "nulls"),
    ("booleans", _post(b'{"inputs": [[[[true]]]]}'), 400, "booleans"),
    ("ragged", _post(b'{"inputs": [[1], [2, 3]]}'), 400, "rectangular"),
    ("negative length", _post(GOOD, [("Content-Length", "-1")]), 400,
     "non-negative integer; received '-1'"),
    ("word length", _post(GOOD, [("Content-Length", "ten")]), 400, "non-negative integer"),
    ("plus length", _post(GOOD, [("Content-Length", "+5")]), 400, "non-negative integer"),
    ("underscore length", _post(GOOD, [("Content-Length", "1_0")]), 400, "non-negative integer"),
    ("no length", _post(GOOD, []), 400, "Content-Length header is required"),
    ("two lengths", _post(GOOD, [("Content-Length", str(len(GOOD))), ("Content-Length", "2")]),
     400, "one"),
    ("chunked", _post(b"4\r\nnull\r\n0\r\n\r\n", [("Transfer-Encoding", "chunked")]), 411,
     "Content-Length"),
    ("too large", _post(b"", [("Content-Length", str((1 << 20) + 1))]), 413,
     "limit is 1048576"),
    ("huge length", _post(b"", [("Content-Length", "9" * 30)]), 400, "non-negative integer"),
]


@pytest.mark.parametrize("what, data, status, words", ERROR_CASES,
                         ids=[case[0] for case in ERROR_CASES])
def test_every_error_is_answered_with_json_naming_the_problem(server, what, data, status,
                                                             words):
    got, _, payload = _exchange(server.server_address[1], data)
    assert got == status, payload
    assert words in payload["error"]


def test_405_says_what_is_allowed_and_health_answers(server):
    port = server.server_address[1]
    assert _exchange(port, b"PUT /predict HTTP/1.1\r\n\r\n")[1]["allow"] == "POST"
    assert _exchange(port, b"GET /health HTTP/1.1\r\n\r\n")[::2] == (200, {"status": "ok"})


def test_a_body_shorter_than_its_content_length_is_400(server):
    status, _, payload = _exchange(server.server_address[1],
                                   _post(b"{}", [("Content-Length", "50")]), close_write=True)
    assert status == 400 and "2 of the 50 bytes" in payload["error"]


def test_concurrent_clients_get_the_plans_answers(server, plan):
    port, failures = server.server_address[1], []

    def client(seed):
        x = np.random.default_rng(seed).normal(size=(seed % 3 + 1, 1, 8, 8)).astype(np.float32)
        for _ in range(3):
            status, _, answer = _exchange(port, _post(_inputs(x)))
            expected = plan(x)
            close = status == 200 and np.allclose(answer["logits"], expected, rtol=1e-5,
                                                  atol=1e-6)
            if not close or answer["classes"] != expected.argmax(axis=1).tolist():
                failures.append((status, answer))
    clients = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=60)
    assert not failures, failures[:2]
    assert server.request_queue_size >= 4 * server.max_threads


def test_non_finite_logits_are_null_in_strict_json(server, plan):
    x = np.zeros((3, 1, 8, 8))
    x[0] = 1e300    # beyond float32: inf inputs, NaN logits
    x[1] = -1e300
    status, _, answer = _exchange(server.server_address[1], _post(_inputs(x)))
    assert status == 200
    with np.errstate(over="ignore"):
        expected = plan(x.astype(np.float32))
    assert not np.isfinite(expected).all()
    got = np.array([[np.nan if v is None else v for v in row] for row in answer["logits"]])
    np.testing.assert_array_equal(np.isnan(got), ~np.isfinite(expected))
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-5, atol=1e-6)
    assert answer["classes"][2] == int(expected[2].argmax())
    assert [answer["classes"][i] is None for i in range(3)] == \
        np.isnan(expected).any(axis=1).tolist()


def test_a_failing_plan_is_a_500_json_answer(plan, capsys):
    class Broken:
        input_shape = plan.input_shape

        def __call__(self, x):
            raise RuntimeError("kernel exploded")
    server = _start(Broken(), threads=2, timeout=1.0)
    try:
        status, _, payload = _exchange(server.server_address[1], _post(GOOD))
    finally:
        _stop(server)
    assert status == 500 and "internal error" in payload["error"]
    assert "kernel exploded" not in payload["error"]
    assert "kernel exploded" in capsys.readouterr().err


def test_stalled_connections_hold_no_thread_past_the_timeout(plan):
    server = _start(plan, threads=3, timeout=1.0)
    port = server.server_address[1]
    try:
        began = time.monotonic()
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        stalled[1].sendall(b"POST /predict HTTP/1.1\r\nContent-Len")
        stalled[2].sendall(_post(b"{", [("Content-Length", "100")]))
        while server.active < 3 and time.monotonic() - began < 5:
            time.sleep(0.01)
        # every thread taken: a new client is answered 503 at once, not queued forever
        status, headers, payload = _exchange(port, _post(GOOD))
        assert status == 503 and headers["retry-after"] == "1" and "busy" in payload["error"]
        answers = []
        for sock in stalled:
            answers.append(serve.read_until_closed(sock))
            sock.close()
        elapsed = time.monotonic() - began
        assert 0.9 < elapsed < 3.0
        assert answers[0] == answers[1] == b""
        assert answers[2].startswith(b"HTTP/1.1 408") and b'"error"' in answers[2]
        while server.active and time.monotonic() - began < 10:
            time.sleep(0.01)
        assert _exchange(port, _post(GOOD))[0] == 200
    finally:
        _stop(server)


def test_a_client_dripping_bytes_is_cut_off_at_the_deadline(plan):
    server = _start(plan, threads=2, timeout=1.0)
    try:
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.server_address[1]),
                                      timeout=10) as sock:
            closed = False
            for byte in b"POST /predict HTTP/1.1\r\nHost: x\r\n":   # one byte per 0.1 s
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)
                if time.monotonic() - began > 3:
                    break
            if not closed:
                sock.settimeout(5)
                try:
                    closed = sock.recv(1) == b""
                except ConnectionResetError:
                    closed = True
        assert closed and time.monotonic() - began < 3.5
    finally:
        _stop(server)


def test_the_selftest_passes(plan_path, capsys):
    assert serve.main([str(plan_path), "--selftest", "24", "--threads", "8"]) == 0
    out = capsys.readouterr().out
    assert "24 requests, 0 wrong answers" in out
    assert "0 wrong" in out.splitlines()[1] and "closed after" in out


def test_an_onnx_model_is_served_as_its_plan(plan_path, tmp_path, capsys):
    pytest.importorskip("onnx")
    onnx_path = tmp_path / "model.onnx"
    deploy.export_onnx(deploy.load(plan_path), np.zeros((1, 1, 8, 8), np.float32), onnx_path)
    imported = deploy.open_model(onnx_path, warmup=True)
    x = np.random.default_rng(3).normal(size=(2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(imported(x), deploy.load(plan_path)(x), rtol=1e-5, atol=1e-6)
    assert serve.main([str(onnx_path), "--selftest", "16", "--threads", "8"]) == 0
    assert "16 requests, 0 wrong answers" in capsys.readouterr().out


def test_several_outputs_are_answered_as_a_list(plan):
    class TwoOutputs:
        input_shape = plan.input_shape

        def __call__(self, x):
            logits = plan(x)
            return logits, np.full((x.shape[0], 2), np.inf, np.float32)
    server = _start(TwoOutputs(), threads=2, timeout=1.0)
    try:
        x = np.random.default_rng(4).normal(size=(3, 1, 8, 8)).astype(np.float32)
        status, _, answer = _exchange(server.server_address[1], _post(_inputs(x)))
    finally:
        _stop(server)
    assert status == 200 and set(answer) == {"outputs"}
    np.testing.assert_allclose(answer["outputs"][0], plan(x), rtol=1e-5, atol=1e-6)
    assert answer["outputs"][1] == [[None, None]] * 3
