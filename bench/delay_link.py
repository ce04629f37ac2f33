"""A link with latency, in user space: a TCP relay that holds every chunk for a fixed one-way delay in
each direction, without limiting throughput (a delay line, as netem's `delay` is). For kernels without
netem (`tc qdisc ... netem`: "Specified qdisc kind is unknown"), run inside a board's network namespace:

    python3 bench/delay_link.py LISTEN_HOST LISTEN_PORT TARGET_PORT ROUND_TRIP_MS

Stops by itself when its parent goes away (bench/fleet.py terminates it)."""

from __future__ import annotations

import asyncio
import sys
import time


async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Chunks from reader to writer, each sent `delay` seconds after it arrived, in order."""
    line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive():
        while chunk := await reader.read(65536):
            line.put_nowait((time.monotonic() + delay, chunk))
        line.put_nowait((time.monotonic() + delay, b""))

    receiving = asyncio.create_task(receive())
    try:
        while True:
            due, chunk = await line.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        receiving.cancel()
        writer.close()


async def main(listen_host: str, listen_port: int, target_port: int, round_trip_ms: float) -> None:
    one_way = round_trip_ms / 2000

    async def relay(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(carry(client_reader, server_writer, one_way), carry(server_reader, client_writer, one_way))

    server = await asyncio.start_server(relay, listen_host, listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
