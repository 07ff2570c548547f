"""JourneyHttpClient and the keep-alive fix, against a real loopback server.

gevent must patch a whole process, so each check runs as a script in a fresh
interpreter: the script starts a small HTTP/1.1 server on a free loopback port,
drives the client and prints what it saw as JSON.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import textwrap

import pytest

from stampede.load.fixes import socket_is_reusable

SERVER_AND_CLIENT = textwrap.dedent('''
    from gevent import monkey; monkey.patch_all()
    import json, resource, socket, sys
    import gevent
    from gevent.server import StreamServer
    from stampede.loadtests.journeys.http import JourneyHttpClient

    connections = []

    def handle(sock, _address):
        connections.append(1)
        buffer = b""
        while True:
            while b"\\r\\n\\r\\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\\r\\n\\r\\n")
            path = head.split(b" ")[1].decode()
            length = 0
            for line in head.split(b"\\r\\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += sock.recv(65536)
            body, buffer = buffer[:length], buffer[length:]
            if path.startswith("/v1/redirect"):
                sock.sendall(b"HTTP/1.1 307 Temporary Redirect\\r\\nLocation: http://198.51.100.7/\\r\\nContent-Length: 0\\r\\n\\r\\n")
            elif path.startswith("/v1/echo-head"):
                payload = json.dumps({"head": head.decode("latin-1"), "sent": body.decode()}).encode()
                sock.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(payload) + payload)
            elif path.startswith("/v1/then-close"):  # a keep-alive answer, then the server drops the connection
                sock.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
                gevent.sleep(0.01)
                sock.close()
                return
            elif path.startswith("/v1/interim"):  # an interim 1xx, then the answer, in two writes
                sock.sendall(b"HTTP/1.1 100 Continue\\r\\n\\r\\n")
                gevent.sleep(0.01)
                sock.sendall(b'HTTP/1.1 201 Created\\r\\nContent-Length: 9\\r\\n\\r\\n{"id": 7}')
            elif path.startswith("/v1/chunked"):
                sock.sendall(b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n4\\r\\n[1, \\r\\n")
                gevent.sleep(0.01)
                sock.sendall(b"2\\r\\n2]\\r\\n0\\r\\n\\r\\n")
            elif path.startswith("/v1/to-the-close"):  # no length: the body ends with the connection
                sock.sendall(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\n\\r\\n[3, ")
                gevent.sleep(0.01)
                sock.sendall(b"4]")
                sock.close()
                return
            elif path.startswith("/v1/silent"):  # answers after the client's network timeout
                gevent.sleep(1.0)
                sock.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
            elif path.startswith("/v1/cut-short"):  # fewer bytes than the length said, then the close
                sock.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 10\\r\\n\\r\\n{}")
                sock.close()
                return
            elif path.startswith("/v1/slow-body"):
                sock.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n")
                gevent.sleep(0.05)
                sock.sendall(b"{}")
            else:
                payload = json.dumps({"path": path, "sent": body.decode()}).encode()
                sock.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(payload) + payload)

    class Events:
        def __init__(self):
            self.fired = []

        def fire(self, **kw):
            self.fired.append({k: kw[k] for k in ("request_type", "name", "response_time", "response_length")}
                              | {"exception": repr(kw["exception"]) if kw["exception"] else None})

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    base = f"http://127.0.0.1:{server.server_port}/v1"
    scenario = sys.argv[1]
    held = []
    if scenario == "past-fd-1024":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        held = [socket.socket() for _ in range(1100)]  # push the client's socket past FD_SETSIZE
    events = Events()
    client = JourneyHttpClient(base, request_event=events, connection_timeout=2, network_timeout=2)
    out = {}
    if scenario == "past-fd-1024":
        for index in range(5):
            response = client.send("POST", "/escrows", params={"limit": 20}, json={"n": index})
            client.report(response, "/escrows", None)
            gevent.sleep(0.02)  # idle between requests, as a user thinking
        out["fileno"] = client._sock.fileno()
        out["last_body"] = response.json()
    elif scenario == "redirect-slow-refused":
        for path in ("/redirect", "/slow-body"):
            response = client.send("GET", path)
            client.report(response, path, None)
            out[path] = {"status": response.status_code, "error": repr(response.error) if response.error else None}
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
        probe.close()
        refused = JourneyHttpClient(f"http://127.0.0.1:{closed_port}/v1", request_event=events,
                                    connection_timeout=2, network_timeout=2)
        response = refused.send("GET", "/anything")
        out["refused"] = {"status": response.status_code, "error": type(response.error).__name__}
    elif scenario == "head":
        out["get"] = client.send("GET", "/echo-head", params={"limit": 20, "search": "a b"},
                                 headers={"Authorization": "Bearer t0k"}).json()
        out["post"] = client.send("POST", "/echo-head", json={"n": 1}, headers={"Authorization": "Bearer t0k"}).json()
        out["empty_post"] = client.send("POST", "/echo-head").json()
        seen = len(connections)
        injected = client.send("GET", "/echo-head", headers={"Authorization": "Bearer x\\r\\nX-Evil: 1"})
        spaced = client.send("GET", "/echo head")
        out["refused"] = [repr(injected.error), injected.status_code, repr(spaced.error), spaced.status_code]
        out["then_close"] = [client.send("GET", "/then-close").status_code, client.send("GET", "/echo-head").status_code]
        out["connections_before_refusals"] = seen
    elif scenario == "framing":
        for path in ("/interim", "/chunked", "/echo-head", "/to-the-close", "/echo-head", "/cut-short"):
            response = client.send("GET", path)
            out[path] = [response.status_code, response.content.decode(),
                         type(response.error).__name__ if response.error else None, len(connections)]
        own = client.send("GET", "/echo-head", headers={"Accept": "text/plain"})  # HTTPClient's merge
        after = client.send("GET", "/echo-head")
        head = client.send("HEAD", "/echo-head")
        out["merged"] = [own.json()["head"].count("Accept:"), "Accept: text/plain" in own.json()["head"],
                         after.status_code, head.status_code, head.content.decode(), len(connections)]
        impatient = JourneyHttpClient(base, request_event=events, connection_timeout=2, network_timeout=0.3)
        waited = impatient.send("GET", "/silent")
        out["timed_out"] = [waited.status_code, f"{type(waited.error).__name__}: {waited.error}",
                            round(waited.response_time_ms)]
    out["connections"] = len(connections)
    out["events"] = events.fired
    for s in held:
        s.close()
    print(json.dumps(out))
''')


def _run(scenario: str) -> dict:
    completed = subprocess.run([sys.executable, "-c", SERVER_AND_CLIENT, scenario],
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_one_connection_serves_every_request_even_past_file_descriptor_1024() -> None:
    out = _run("past-fd-1024")
    assert out["fileno"] >= 1024
    assert out["connections"] == 1  # geventhttpclient's own check would have reconnected 4 times
    assert [e["request_type"] for e in out["events"]] == ["POST"] * 5
    assert all(e["exception"] is None and e["response_length"] > 0 for e in out["events"])
    assert out["last_body"] == {"path": "/v1/escrows?limit=20", "sent": '{"n": 4}'}


def test_redirects_are_returned_not_followed_timing_covers_the_body_and_refusals_are_status_0() -> None:
    out = _run("redirect-slow-refused")
    assert out["/redirect"] == {"status": 307, "error": None}
    assert out["/slow-body"] == {"status": 200, "error": None}
    slow = next(e for e in out["events"] if e["name"] == "/slow-body")
    assert slow["response_time"] >= 50  # the body came 50 ms after the headers
    assert out["refused"] == {"status": 0, "error": "ConnectionRefusedError"}
    assert out["connections"] == 1


def test_a_bad_host_is_refused_with_the_field_and_the_fix() -> None:
    from stampede.loadtests.journeys.http import JourneyHttpClient

    with pytest.raises(ValueError, match=r"^host: 'ftp://x' is not an http\(s\) URL; pass --host"):
        JourneyHttpClient("ftp://x", request_event=None, connection_timeout=1, network_timeout=1)


@pytest.fixture
def idle_pair():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    yield client, accepted
    for s in (client, accepted, server):
        s.close()


def test_an_idle_open_socket_is_reusable(idle_pair) -> None:
    client, _ = idle_pair
    assert socket_is_reusable(client)


def test_a_socket_the_server_closed_or_wrote_to_is_not_reusable(idle_pair) -> None:
    client, accepted = idle_pair
    accepted.sendall(b"stray")
    assert not socket_is_reusable(client)
    accepted.close()
    assert not socket_is_reusable(client)


def test_a_closed_socket_is_not_reusable(idle_pair) -> None:
    client, _ = idle_pair
    client.close()
    assert not socket_is_reusable(client)


def test_select_cannot_check_descriptors_past_1024_which_is_why_poll_is_used() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard open-file limit ({hard}) is below 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [socket.socket() for _ in range(1100)]
    try:
        high = held[-1]
        assert high.fileno() >= 1024
        with pytest.raises(ValueError, match="filedescriptor out of range"):
            select.select([high], [], [], 0)
        server = socket.create_server(("127.0.0.1", 0))
        with server, socket.create_connection(server.getsockname()) as client:
            assert client.fileno() >= 1024
            accepted, _ = server.accept()
            with accepted:
                assert socket_is_reusable(client)
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_request_head_carries_the_same_fields_refuses_injection_and_retries_a_dropped_connection() -> None:
    out = _run("head")
    port = out["get"]["head"].split("Host: 127.0.0.1:")[1].split("\r\n")[0]
    assert out["get"]["head"] == ("GET /v1/echo-head?limit=20&search=a+b HTTP/1.1\r\nUser-Agent: stampede-journeys\r\n"
                                  "Accept: application/json\r\nAuthorization: Bearer t0k\r\nHost: 127.0.0.1:" + port)
    assert out["post"]["head"].endswith("Authorization: Bearer t0k\r\nContent-Type: application/json\r\n"
                                        f"Host: 127.0.0.1:{port}\r\nContent-Length: 8")
    assert out["post"]["sent"] == '{"n": 1}'
    assert out["empty_post"]["head"].endswith("Content-Length: 0")  # RFC 9112 6.3, as HTTPClient sends it
    injected, injected_status, spaced, spaced_status = out["refused"]
    assert "invalid value for header field 'Authorization'" in injected and injected_status == 0
    assert "invalid request URI" in spaced and spaced_status == 0
    assert out["then_close"] == [200, 200]  # the kept-alive socket the server dropped: a fresh one, no error
    assert out["connections"] == out["connections_before_refusals"] + 1  # nothing was sent for the refused two


def test_answers_are_framed_by_the_parser_and_the_connection_is_kept_only_when_it_may_be() -> None:
    out = _run("framing")
    assert out["/interim"] == [201, '{"id": 7}', None, 1]  # the 100 skipped, the same connection
    assert out["/chunked"] == [200, "[1, 2]", None, 1]
    assert out["/to-the-close"] == [200, "[3, 4]", None, 1]  # read to the close, which ends the connection
    assert out["/echo-head"][::3] == [200, 2]  # so the next request opens a second one
    assert out["/cut-short"] == [0, "", "HTTPParseError", 2]  # fewer bytes than its length: a failure
    accepts, own_accept, after, head, head_body, connections = out["merged"]
    assert (accepts, own_accept, after, head, head_body) == (1, True, 200, 200, "")
    assert connections == 3  # HTTPClient's two requests and the one between ran on one connection
    status, error, waited_ms = out["timed_out"]
    assert (status, error) == (0, "TimeoutError: timed out")  # as gevent's socket timeout says it
    assert 300 <= waited_ms < 900


def test_an_answer_that_is_not_standard_json_is_a_value_error_as_the_journeys_judge_expects():
    # the journeys count "body is not JSON" on ValueError: msgspec's decoder must raise one for each kind
    code = textwrap.dedent("""
        import json
        from stampede.loadtests.journeys.http import JourneyResponse
        def decoded(content):
            response = JourneyResponse("GET", "/x", 0.0)
            response.content = content
            try:
                return ["ok", response.json()]
            except ValueError as exc:
                return ["ValueError", type(exc).__name__]
        print(json.dumps([decoded(c) for c in (
            b'{"items": [{"id": "e1", "price": 450000.5}], "total": 1, "name": "caf\\xc3\\xa9"}',
            b"<html>502 Bad Gateway</html>", b'{"total": 1', b'{"a": "\\xff"}', b'{"a": NaN}', b"")]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    first, *bad = json.loads(done.stdout.strip().splitlines()[-1])
    assert first == ["ok", {"items": [{"id": "e1", "price": 450000.5}], "total": 1, "name": "café"}]
    assert [kind for kind, _ in bad] == ["ValueError"] * 5, bad
