#!/usr/bin/env python3
"""Memory per idle MQTT connection: connect N raw MQTT 3.1.1 clients, report the broker's RSS growth.

Usage: idle_connections.py MQTT_PORT BROKER_PID N   (loopback only; N is bounded by the fd limit)
"""
import socket, sys, time, os
port = int(sys.argv[1]); pid = int(sys.argv[2]); n = int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
base = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    cid = f"idle-{i}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    s.sendall(bytes([0x10, len(body)]) + body)
    socks.append(s)
for s in socks:
    assert s.recv(4) == b"\x20\x02\x00\x00"
time.sleep(1)
after = rss()
print(f"{n} idle MQTT connections: RSS {base} KiB -> {after} KiB, {(after-base)/n:.1f} KiB per connection")
