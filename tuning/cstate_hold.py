#!/usr/bin/env python3
"""Hold a CPU C-state latency limit: open /dev/cpu_dma_latency, write the limit, keep it open.

Installed as /usr/local/sbin/appliance-cstate-hold and run by appliance-cstate.service. While
the file is open the kernel's PM QoS keeps every CPU out of idle states whose exit latency exceeds
the limit (0 = stay in C0/C1 polling). Closing the file (exit, SIGTERM) restores the default.
Stdlib only: it runs before the appliance's virtualenv exists.
"""
import os
import signal
import struct
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: appliance-cstate-hold LATENCY_US (an integer >= 0)", file=sys.stderr)
        return 2
    latency = int(argv[1])
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
        os.write(fd, struct.pack("<i", latency))
    except OSError as e:
        print(f"appliance-cstate-hold: /dev/cpu_dma_latency: {e.strerror}", file=sys.stderr)
        return 1
    print(f"appliance-cstate-hold: holding CPU wake-up latency <= {latency} us", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            signal.pause()
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
