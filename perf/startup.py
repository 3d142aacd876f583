"""Time from spawning a proxy to its first proxied response.

    taskset -c 0 python perf/startup.py --port 18080 -- fastmesh run -c cfg.yaml --single-process
    taskset -c 0 python perf/startup.py --port 18080 -- envoy -c envoy.yaml --concurrency 1

Polls 127.0.0.1:PORT with a GET every 2 ms until a 200 arrives, prints the
elapsed milliseconds, then stops the proxy. (`fastmesh bench` measures the
same figure for every proxy in its runs.)
"""
import argparse
import socket
import subprocess
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - t0 < args.timeout:
            try:
                with socket.create_connection(("127.0.0.1", args.port), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        print(f"{(time.monotonic() - t0) * 1000:.0f} ms")
                        return
            except OSError:
                time.sleep(0.002)
        raise SystemExit("no proxied response before the timeout")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
