#!/usr/bin/env python3
"""HTTPS in front of a plain-HTTP endpoint on 127.0.0.1, as AWS's endpoints are HTTPS:

    python3 bench/tls_terminator.py --cert CERT --key KEY --upstream 127.0.0.1:PORT

Prints `listening PORT` once it accepts connections. Every TLS connection gets its own TCP
connection upstream and bytes are copied both ways, so keep-alive works as the client uses it
(the SDK keeps one connection per endpoint; the upstream may still close it)."""

import argparse
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


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

    async def serve(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
