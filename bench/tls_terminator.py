#!/usr/bin/env python3
"""HTTPS in front of a plain-HTTP endpoint on 127.0.0.1, as AWS's endpoints are HTTPS:

    python3 bench/tls_terminator.py --cert CERT --key KEY --upstream 127.0.0.1:PORT

Prints `listening PORT` once it accepts connections. It keeps each client's TLS connection open
across requests, as a region's endpoint does, and gives each one its own keep-alive connection to
the upstream (bench/count_proxy.py), so a warm request costs one hop on open connections: no TLS
handshake, TCP connect or proxy thread per request, none of which a region's endpoint adds either.
HTTP/1.1 with Content-Length bodies only (what the SDKs send and the proxy answers)."""

import argparse
import asyncio
import ssl
import sys

HOP_BY_HOP = (b"connection", b"keep-alive", b"transfer-encoding")


async def read_message(reader):
    """One HTTP/1.1 message: (start line and headers without hop-by-hop ones, body), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        return None
    lines = head[:-4].split(b"\r\n")
    headers, length = [], 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() not in HOP_BY_HOP:
            headers.append(line)
    body = await reader.readexactly(length) if length else b""
    return lines[0], headers, body


class Upstream:
    """One client's keep-alive connection to the upstream, opened on its first request."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def exchange(self, start, headers, body):
        """The upstream's answer, or None when it never came. A kept connection found closed is
        reopened once, as the SDKs' own pools do; a fresh one that fails is not retried."""
        if self.writer is not None:
            answer = await self._send(start, headers, body)
            if answer is not None:
                return answer
            self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        answer = await self._send(start, headers, body)
        if answer is None:
            self.close()
        return answer

    async def _send(self, start, headers, body):
        try:
            self.writer.write(b"\r\n".join([start, *headers]) + b"\r\n\r\n" + body)
            await self.writer.drain()
            return await read_message(self.reader)
        except (ConnectionError, OSError):
            return None

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True, help="PEM: the server certificate and its chain")
    parser.add_argument("--key", required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the plain-HTTP server")
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)

    async def serve(reader, writer):
        upstream = Upstream(host, int(port))
        try:
            while (request := await read_message(reader)) is not None:
                answer = await upstream.exchange(*request)
                if answer is None:
                    break
                status, headers, body = answer
                writer.write(b"\r\n".join([status, *headers, b"Connection: keep-alive"]) + b"\r\n\r\n" + body)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            upstream.close()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
