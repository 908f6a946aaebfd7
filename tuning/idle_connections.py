#!/usr/bin/env python3
"""Memory per idle MQTT connection: three rounds of N raw MQTT 3.1.1 clients connect and stay
connected; prints the broker's RSS growth per connection in each round (the first round also
pays one-time growth of pools and allocator heaps; later rounds show the steady cost).

Usage: idle_connections.py MQTT_PORT BROKER_PID N   (loopback only; 3 x N must fit the fd limit)
"""
import socket, sys, time
port = int(sys.argv[1]); pid = int(sys.argv[2]); n = int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
socks = []
def connect(start, count):
    for i in range(start, start + count):
        s = socket.create_connection(("127.0.0.1", port))
        cid = f"idle-{i}".encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
        s.sendall(bytes([0x10, len(body)]) + body); socks.append(s)
    for s in socks[start:]:
        assert s.recv(4) == b"\x20\x02\x00\x00"
    time.sleep(1)
r0 = rss(); connect(0, n); r1 = rss(); connect(n, n); r2 = rss(); connect(2 * n, n); r3 = rss()
print(f"per connection, in three rounds of {n}: {(r1-r0)/n:.1f}, {(r2-r1)/n:.1f}, {(r3-r2)/n:.1f} KiB")
