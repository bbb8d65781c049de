"""An experiment, not a scenario: what one mutual-TLS connection costs a server as the
hub's edge port sets it up (docs/performance.md, "TLS everywhere").

Two figures, each beside the same without a client certificate or without TLS:

- OpenSSL's CPU per server handshake, on memory BIOs in one thread with only the server's
  calls timed (no event loop, no sockets);
- RSS per connection held open by a bare asyncio server (``SSLProtocol.max_size`` 4 KiB,
  as the hub sets it), before and after ``malloc_trim(0)``.

Only the standard library, so it runs under any Debian's own ``python3``, which is how the
OpenSSL versions were compared. Certificates first, with this checkout's PKI code::

    .venv/bin/python -m bench.tls_cost --make-certs /tmp/tls-certs
    .venv/bin/python bench/tls_cost.py /tmp/tls-certs
    # in a Debian root (tests/package/roots.py makes them), with /proc bound into it:
    cp bench/tls_cost.py /tmp/tls-certs ROOT/tmp/ -r
    chroot ROOT python3 /tmp/tls_cost.py /tmp/tls-certs

``--group X25519`` restricts the server's key exchange (OpenSSL 3.5 otherwise negotiates
X25519MLKEM768 with a 3.5 client).
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import ctypes
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

#: The client side of the held connections, run as a child process.
_CLIENT = r"""
import asyncio, ssl, sys
certs, count, port, tls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
async def main():
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(f"{certs}/ca.crt")
        ctx.load_cert_chain(f"{certs}/node.crt", f"{certs}/node.key")
    gate, held = asyncio.Semaphore(100), []
    async def one():
        async with gate:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                 server_hostname="localhost" if tls else None)
            w.write(b"hello\n")
            await r.readline()
            held.append(w)
    await asyncio.gather(*(one() for _ in range(count)))
    print("held", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def server_context(certs: str, client_cert: bool, group: str | None) -> ssl.SSLContext:
    """The edge port's context (cloudhub/pki.py ``edge_context``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(f"{certs}/server.crt", f"{certs}/server.key")
    if client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(f"{certs}/ca.crt")
    ctx.num_tickets = 0
    if group:
        ctx.set_ecdh_curve(group)
    return ctx


def client_context(certs: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{certs}/ca.crt")
    ctx.load_cert_chain(f"{certs}/node.crt", f"{certs}/node.key")
    return ctx


def handshake_ms(server: ssl.SSLContext, client: ssl.SSLContext, count: int) -> float:
    """The server's CPU per handshake, in milliseconds."""
    spent = 0.0
    for _ in range(count):
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        theirs = client.wrap_bio(c_in, c_out, server_hostname="localhost")
        began = time.process_time()
        ours = server.wrap_bio(s_in, s_out, server_side=True)
        spent += time.process_time() - began
        client_done = server_done = False
        while not (client_done and server_done):
            if not client_done:
                try:
                    theirs.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            if not server_done:
                began = time.process_time()
                try:
                    ours.do_handshake()
                    server_done = True
                except ssl.SSLWantReadError:
                    pass
                spent += time.process_time() - began
            c_in.write(s_out.read())
    return spent / count * 1000


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def _held_kib(certs: str, count: int, tls: bool, group: str | None) -> tuple[float, float]:
    """RSS per held connection, in KiB: as held, and after malloc_trim(0)."""
    asyncio.sslproto.SSLProtocol.max_size = 4096  # type: ignore[attr-defined]
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    held = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"ok\n")
        held.append(writer)

    ctx = server_context(certs, True, group) if tls else None
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    trim(0)
    before = _rss_kib()
    args = [certs, str(count), str(port), "1" if tls else "0"]
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, *args, stdout=subprocess.PIPE
    )
    try:
        assert client.stdout is not None
        await client.stdout.readline()
        while len(held) < count:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        as_held = (_rss_kib() - before) / count
        trim(0)
        return as_held, (_rss_kib() - before) / count
    finally:
        client.kill()
        await client.wait()
        server.close()


def make_certs(directory: Path) -> None:
    """A CA, the server's certificate and one node's, by this checkout's PKI code."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cloudhub.pki import Authority, init_pki, pki_paths
    from edgeward import certs

    paths = pki_paths(directory / "hub")
    init_pki(paths, ["localhost"], ["127.0.0.1"])
    key = certs.new_private_key()
    signed = Authority(paths).sign_node(certs.node_csr(key, "node-1"), "node-1", 30)
    for name in ("ca.crt", "server.crt", "server.key"):
        (directory / name).write_bytes((paths.directory / name).read_bytes())
    (directory / "node.crt").write_bytes(signed.pem)
    certs.write_private(directory / "node.key", certs.private_key_pem(key))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A mutual-TLS connection's cost to a server: OpenSSL's CPU per "
        "handshake and the RSS of held connections."
    )
    parser.add_argument("certs", help="directory with ca.crt, server.crt/.key, node.crt/.key")
    parser.add_argument("--make-certs", action="store_true", help="write them there and stop")
    parser.add_argument("--handshakes", type=int, default=2000, help="per variant (2000)")
    parser.add_argument("--held", type=int, default=3000, help="connections held (3000)")
    parser.add_argument("--group", help="key exchange group for the server, e.g. X25519")
    args = parser.parse_args(argv)
    if args.make_certs:
        Path(args.certs).mkdir(parents=True, exist_ok=True)
        make_certs(Path(args.certs))
        return 0
    print(f"{ssl.OPENSSL_VERSION}, Python {sys.version.split()[0]}")
    client = client_context(args.certs)
    for label, with_cert in (("mutual TLS", True), ("no client certificate", False)):
        server = server_context(args.certs, with_cert, args.group)
        handshake_ms(server, client, 50)  # warm up
        took = handshake_ms(server, client, args.handshakes)
        print(f"{label:22} {took:.3f} ms server CPU per handshake (OpenSSL alone)")
    for label, tls in (("mutual TLS", True), ("plain TCP", False)):
        held, trimmed = asyncio.run(_held_kib(args.certs, args.held, tls, args.group))
        print(f"{label:22} {held:.1f} KiB per held connection, {trimmed:.1f} after malloc_trim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
