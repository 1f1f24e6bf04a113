"""A counting HTTP proxy for AWS API calls: forwards every request to moto (or DynamoDB's to
DynamoDB Local) and counts it by operation, so a benchmark can say how many DynamoDB requests
one webhook costs.

    python bench/count_proxy.py UPSTREAM_URL [--dynamodb URL] [--write-units] [--latency-ms N]
                                                    # prints "listening <port>", then serves

The operation is the `X-Amz-Target` header (DynamoDB's JSON protocol:
`DynamoDB_20120810.PutItem`), or the `Action` of a form-encoded query-protocol body (SNS:
`Publish`). `GET /__counts` answers, as JSON, the counts so far and the milliseconds requests
spent in this proxy and the upstream (callers diff two snapshots: that wait is what a local
DynamoDB adds to an invocation, to set apart from the function's own time). Loopback only;
stdlib only.

--dynamodb sends DynamoDB's requests to their own upstream (DynamoDB Local) and the rest (SNS)
to UPSTREAM_URL. --write-units asks DynamoDB for `ReturnConsumedCapacity: INDEXES` on every
write that does not ask itself, and adds up the write units the answers report (`write_units`
in /__counts), table and indexes: that is the bill. Only DynamoDB Local computes them (moto
answers a constant). The answer goes back unchanged (its CRC32 header still matches): a
`ConsumedCapacity` field the caller did not ask for is one both SDKs read and ignore. A write
whose condition fails reports none, though DynamoDB bills it.

--latency-ms holds each request that long before forwarding it: a stand-in for the network and
service time of AWS in a region, which a local moto does not have (requests in flight at once
wait at once, as they would there).
"""

import argparse
import http.client
import json
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Per connection, not per message: never forwarded (RFC 9110 §7.6.1).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def operation(headers, body):
    target = headers.get("X-Amz-Target")
    if target:
        return target
    if body and "x-www-form-urlencoded" in (headers.get("Content-Type") or ""):
        action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return action[0]
    return "other"


WRITES = {"PutItem", "UpdateItem", "DeleteItem"}


def with_capacity_request(headers, body):
    """The body of a DynamoDB write with `ReturnConsumedCapacity: INDEXES` added (when it did
    not ask for any), or None when it is not such a write."""
    target = headers.get("X-Amz-Target") or ""
    if not target.startswith("DynamoDB_") or target.split(".")[-1] not in WRITES:
        return None
    request = json.loads(body)
    request.setdefault("ReturnConsumedCapacity", "INDEXES")
    return json.dumps(request).encode()


def write_units(payload):
    try:
        return float(json.loads(payload).get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))
    except (ValueError, AttributeError):
        return 0.0


def make_handler(upstreams, state, lock, count_write_units, latency_s):
    """upstreams: {"dynamodb": (host, port), "other": (host, port)}."""
    local = threading.local()  # one keep-alive connection per upstream per serving thread

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 so the SDKs keep their connections open, as they would against AWS.
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle on, the second one waits for the
        # client's delayed ACK (~40 ms on Linux) and every request looks 40 ms slower.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def _body(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, method, body):
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}}
            which = "dynamodb" if (self.headers.get("X-Amz-Target") or "").startswith("DynamoDB_") else "other"
            headers["Content-Length"] = str(len(body))
            conns = local.__dict__.setdefault("conns", {})
            for attempt in (1, 2):
                conn = conns.get(which)
                if conn is None:
                    conn = conns[which] = http.client.HTTPConnection(*upstreams[which], timeout=60)
                try:
                    conn.request(method, self.path, body=body, headers=headers)
                    res = conn.getresponse()
                    return res.status, res.getheaders(), res.read()
                except (http.client.HTTPException, ConnectionError):
                    # The upstream closed an idle keep-alive connection: one fresh retry.
                    conn.close()
                    conns[which] = None
                    if attempt == 2:
                        raise

        def _serve(self, method):
            # From here to the answer is time the calling function waits on "DynamoDB": moto's
            # time and this proxy's own. Booked before the answer goes out, so a caller that
            # reads /__counts after its request returned always sees it.
            start = time.perf_counter()
            body = self._body() if method != "GET" else b""
            if method == "GET" and self.path == "/__counts":
                with lock:
                    payload = json.dumps(state).encode()
                status, headers = 200, [("Content-Type", "application/json")]
            else:
                sent = (count_write_units and with_capacity_request(self.headers, body)) or body
                if latency_s:
                    time.sleep(latency_s)
                status, headers, payload = self._forward(method, sent)
                with lock:
                    state["counts"][operation(self.headers, body)] += 1
                    if sent is not body and status == 200:
                        state["write_units"] += write_units(payload)
                    state["upstream_ms"] += (time.perf_counter() - start) * 1000
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def do_PUT(self):
            self._serve("PUT")

        def do_DELETE(self):
            self._serve("DELETE")

    return Handler


def serve(upstream_url, port=0, dynamodb_url=None, count_write_units=False, latency_ms=0.0):
    """Starts the proxy on 127.0.0.1 in the calling process; returns the server (serve_forever it)."""

    def host_port(url):
        u = urllib.parse.urlsplit(url)
        return u.hostname, u.port

    upstreams = {"other": host_port(upstream_url), "dynamodb": host_port(dynamodb_url or upstream_url)}
    state = {"counts": Counter(), "upstream_ms": 0.0, "write_units": 0.0}
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(upstreams, state, threading.Lock(),
                                                                  count_write_units, latency_ms / 1000))
    server.daemon_threads = True
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("upstream")
    parser.add_argument("--dynamodb", help="DynamoDB's own upstream (default: UPSTREAM)")
    parser.add_argument("--write-units", action="store_true", help="add up DynamoDB's reported write units")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="hold each request this long first")
    args = parser.parse_args()
    srv = serve(args.upstream, dynamodb_url=args.dynamodb, count_write_units=args.write_units,
                latency_ms=args.latency_ms)
    print(f"listening {srv.server_address[1]}", flush=True)
    srv.serve_forever()
