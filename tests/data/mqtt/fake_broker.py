"""Minimal fake MQTT broker for capturing what a client sends. Accepts one connection,
answers CONNACK / PUBACK / PUBREC / PUBCOMP / SUBACK / UNSUBACK / PINGRESP so the client
proceeds, and writes every byte the client sent to the output file."""
import socket, sys

port, out_path = int(sys.argv[1]), sys.argv[2]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept(); conn.settimeout(3)
data = b""; pos = 0; version = 4

def packet_at(buf, i):
    if len(buf) - i < 2: return None
    mult, val, j = 1, 0, i + 1
    while True:
        if j >= len(buf): return None
        b = buf[j]; val += (b & 0x7F) * mult; mult *= 128; j += 1
        if not b & 0x80: break
    if len(buf) < j + val: return None
    return buf[i], buf[j:j + val], j + val

done = False
while not done:
    try:
        chunk = conn.recv(65536)
    except socket.timeout:
        break
    if not chunk: break
    data += chunk
    while True:
        p = packet_at(data, pos)
        if p is None: break
        first, body, pos = p
        t = first >> 4
        if t == 1:
            namelen = int.from_bytes(body[0:2], "big"); version = body[2 + namelen]
            conn.sendall(b"\x20\x03\x00\x00\x00" if version == 5 else b"\x20\x02\x00\x00")
        elif t == 3:
            qos = (first >> 1) & 3
            if qos:
                tl = int.from_bytes(body[0:2], "big"); pid = body[2 + tl:4 + tl]
                conn.sendall(bytes([0x40 if qos == 1 else 0x50, 2]) + pid)
        elif t == 6:
            conn.sendall(b"\x70\x02" + body[0:2])
        elif t == 8:
            # Count the filters to answer one granted QoS each.
            i = 2; n = 0
            if version == 5:
                plen = body[i]; i += 1 + plen
            while i < len(body):
                fl = int.from_bytes(body[i:i + 2], "big"); i += 2 + fl + 1; n += 1
            props = b"\x00" if version == 5 else b""
            payload = body[0:2] + props + b"\x01" * n
            conn.sendall(bytes([0x90, len(payload)]) + payload)
        elif t == 10:
            conn.sendall(b"\xb0\x04" + body[0:2] + b"\x00\x00" if version == 5 else b"\xb0\x02" + body[0:2])
        elif t == 12:
            conn.sendall(b"\xd0\x00")
        elif t == 14:
            done = True
open(out_path, "wb").write(data)
print("saved", len(data), flush=True)
