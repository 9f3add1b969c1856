"""Opens N keep-alive connections to URL, sends one GET on each and reads its response, then
holds them all open and idle until killed. Prints `ready OK FAILED` once every connection has
had its answer (OK counts 200s). Used by benches/load/run.sh for the memory benchmark.

    python3 idle_conns.py http://127.0.0.1:8080/public/x 10000
"""

import asyncio
import resource
import ssl
import sys
from urllib.parse import urlsplit

IN_FLIGHT = 128  # connections being opened at once


async def open_one(url, context, gate, held, failures):
    async with gate:
        try:
            reader, writer = await asyncio.open_connection(
                url.hostname,
                url.port,
                ssl=context,
                server_hostname="localhost" if context else None,
            )
            writer.write(
                f"GET {url.path or '/'} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = None
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if length is not None:
                await reader.readexactly(length)
            elif chunked:
                await reader.readuntil(b"0\r\n\r\n")
            held.append((reader, writer, status))
        except Exception as error:  # noqa: BLE001 - counted and reported, never fatal
            failures.append(repr(error))


async def main():
    url = urlsplit(sys.argv[1])
    count = int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    context = None
    if url.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
    gate = asyncio.Semaphore(IN_FLIGHT)
    held, failures = [], []
    await asyncio.gather(
        *(open_one(url, context, gate, held, failures) for _ in range(count))
    )
    ok = sum(1 for _, _, status in held if status == 200)
    if failures:
        print(f"first failure: {failures[0]}", file=sys.stderr, flush=True)
    print(f"ready {ok} {count - ok}", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
