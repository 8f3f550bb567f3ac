"""What one write to a loopback TCP socket costs, the floor under any relay's fan-out.

`python -m bench.writecost [SIZE ...]`: 200 sockets to a reader process, 300 rounds 40 ms
apart (as frames come), one non-blocking write of SIZE bytes per socket and round; prints
this process's CPU per write (user + system, so the kernel's send path is included).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time

SOCKETS = 200
ROUNDS = 300


def read_all(port: int) -> None:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(SOCKETS)]
    poll = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poll.register(fd, select.EPOLLIN)
    open_count = len(socks)
    while open_count:
        for fd, _ in poll.poll():
            if not by_fd[fd].recv(1 << 18):
                poll.unregister(fd)
                by_fd[fd].close()
                open_count -= 1


def cost(size: int) -> float:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(SOCKETS)
        reader = subprocess.Popen([sys.executable, "-m", "bench.writecost", "--read",
                                   str(server.getsockname()[1])])
        conns = [server.accept()[0] for _ in range(SOCKETS)]
    payload = os.urandom(size)
    for conn in conns:
        conn.setblocking(False)
    start = time.process_time()
    for _ in range(ROUNDS):
        for conn in conns:
            os.write(conn.fileno(), payload)
        time.sleep(0.04)
    spent = time.process_time() - start
    for conn in conns:
        conn.close()
    reader.wait()
    return spent / (ROUNDS * SOCKETS)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--read"]:
        read_all(int(argv[1]))
        return
    for size in [int(a) for a in argv] or [1000, 10_000, 20_000]:
        print(f"{size} bytes: {cost(size) * 1e6:.1f} µs of CPU per write")


if __name__ == "__main__":
    main(sys.argv[1:])
