#!/usr/bin/env python3
# .ci/package's SIP peer for the upgrade across a live call.
import os, socket, sys, threading, time
# The proxy on 5060 (a 200 to every OPTIONS) and a live call through heptap on 5062 (a request
# every 100 ms) until WORK/stop appears, counting what it saw in WORK/live; or, with a
# Call-ID, one exchange on a new connection.
work = sys.argv[1]


def read_message(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data


def exchange(s, call_id):
    s.sendall(b"OPTIONS sip:proxy@127.0.0.1 SIP/2.0\r\nCall-ID: " + call_id.encode() +
              b"\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    reply = read_message(s)
    return reply is not None and reply.startswith(b"SIP/2.0 200 OK") and call_id.encode() in reply


if len(sys.argv) > 2:
    s = socket.create_connection(("127.0.0.1", 5062), timeout=20)
    sys.exit(0 if exchange(s, sys.argv[2]) else 1)


def answer(conn):
    with conn:
        while True:
            m = read_message(conn)
            if m is None:
                return
            call_id = [l for l in m.split(b"\r\n") if l.lower().startswith(b"call-id:")][0]
            conn.sendall(b"SIP/2.0 200 OK\r\n" + call_id + b"\r\nContent-Length: 0\r\n\r\n")


upstream = socket.socket()
upstream.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
upstream.bind(("127.0.0.1", 5060))
upstream.listen(64)


def serve():
    while True:
        conn, _ = upstream.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


threading.Thread(target=serve, daemon=True).start()


def note(name, ok, failed):
    with open(os.path.join(work, name + ".tmp"), "w") as f:
        f.write(f"{ok} {failed}\n")
    os.replace(os.path.join(work, name + ".tmp"), os.path.join(work, name))


live = socket.create_connection(("127.0.0.1", 5062), timeout=20)
ok = failed = 0
while not os.path.exists(os.path.join(work, "stop")) and failed == 0:
    try:
        if exchange(live, f"live-{ok}"):
            ok += 1
        else:
            failed += 1
    except OSError:
        failed += 1
    note("live", ok, failed)
    time.sleep(0.1)
live.close()
note("live.done", ok, failed)
# Keep answering for the connections that follow, until told to exit.
while not os.path.exists(os.path.join(work, "exit")):
    time.sleep(0.1)
