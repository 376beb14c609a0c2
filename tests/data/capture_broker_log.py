"""Record what a real Mosquitto publishes on $SYS/broker/log/# for the monitor's parser tests.

    .venv/bin/python tests/data/capture_broker_log.py [OUT.jsonl]

Starts the installed Mosquitto with mosquitto/mosquitto.conf.template (the project's plugin
asks a tiny stand-in of the /mqtt/auth/ endpoints started here: every user may log in with the
password "good" and do anything), drives clients through each way of arriving and leaving, and
writes one JSON object per log message: {"scenario", "topic", "payload"}. The payloads are the
exact UTF-8 text the broker sent. Output: tests/data/mosquitto-<version>-log.jsonl.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.brokers import Broker, make_certs, wait_for  # noqa: E402

SECRET = "capture-secret"
PASSWORD = "good"
WEIRD_ID = "dev 1 \"quoted\" 'single' Zoë-温度 (p2, c1)"
WEIRD_USER = 'Zoë O\'Brien "the sensor" 温度'


class Auth(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        ok = "password" not in body or body["password"] == PASSWORD
        self.send_response(200 if ok else 403)
        self.end_headers()
        self.wfile.write(b'{"ok": true, "error": ""}' if ok else b'{"ok": false, "error": "no"}')

    def log_message(self, *args: object) -> None:
        pass


class Recorder:
    def __init__(self, broker: Broker) -> None:
        self.lines: list[dict[str, str]] = []
        self.scenario = "start"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="recorder")
        self.client.username_pw_set("recorder", PASSWORD)
        self.client.tls_set(ca_certs=str(broker.ca_file))
        self.client.on_connect = lambda c, *_: c.subscribe("$SYS/broker/log/#")
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        payload = message.payload.decode("utf-8")
        # The recorder's own lines and per-packet debug chatter are not what the parser reads.
        if "recorder" in payload and "Sending" not in payload:
            return
        self.lines.append({"scenario": self.scenario, "topic": message.topic, "payload": payload})

    def wait_quiet(self, seconds: float = 0.5) -> None:
        count = -1
        while count != len(self.lines):
            count = len(self.lines)
            time.sleep(seconds)


def device(
    broker: Broker,
    client_id: str,
    username: str | None = "alice",
    password: str = PASSWORD,
    protocol: int = mqtt.MQTTv5,
    keepalive: int = 60,
    clean: bool = True,
) -> mqtt.Client:
    kwargs = {"clean_session": clean} if protocol != mqtt.MQTTv5 else {}
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs
    )
    if username is not None:
        client.username_pw_set(username, password)
    client.tls_set(ca_certs=str(broker.ca_file))
    if protocol == mqtt.MQTTv5:
        client.connect("127.0.0.1", broker.port, keepalive=keepalive, clean_start=clean)
    else:
        client.connect("127.0.0.1", broker.port, keepalive=keepalive)
    client.loop_start()
    return client


def main() -> None:
    auth = ThreadingHTTPServer(("127.0.0.1", 0), Auth)
    threading.Thread(target=auth.serve_forever, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="capture-"))
    broker = Broker(
        workdir=work / "broker",
        certs=make_certs(work / "certs"),
        auth_port=auth.server_address[1],
        secret=SECRET,
    )
    broker.start()
    recorder = Recorder(broker)
    wait_for(lambda: recorder.client.is_connected(), 5, "recorder")
    time.sleep(0.5)

    def scenario(name: str) -> None:
        recorder.wait_quiet()
        recorder.scenario = name

    scenario("mqtt5 clean disconnect")
    c = device(broker, "dev-1", keepalive=60)
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()

    scenario("mqtt311 persistent session, clean disconnect")
    c = device(broker, "dev-2", protocol=mqtt.MQTTv311, keepalive=30, clean=False)
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()

    scenario("mqtt31")
    c = device(broker, "dev-31", protocol=mqtt.MQTTv31, keepalive=15)
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()

    scenario("weird client id and username")
    c = device(broker, WEIRD_ID, username=WEIRD_USER)
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()

    scenario("connection dropped without DISCONNECT")
    c = device(broker, "dev-drop")
    time.sleep(0.3)
    c.loop_stop()
    c.socket().close()

    scenario("keepalive timeout")
    c = device(broker, "dev-sleepy", keepalive=1)
    time.sleep(0.3)
    c.loop_stop()  # the socket stays open and silent: the broker times it out after 1.5 s
    time.sleep(3)
    c.socket().close()

    scenario("session taken over")
    first = device(broker, "dev-twin")
    time.sleep(0.3)
    second = device(broker, "dev-twin")
    time.sleep(0.5)
    first.loop_stop()
    second.disconnect()
    second.loop_stop()

    scenario("bad password")
    c = device(broker, "dev-badpass", password="wrong")
    time.sleep(0.5)
    c.loop_stop()

    scenario("no username")
    c = device(broker, "dev-anon", username=None)
    time.sleep(0.5)
    c.loop_stop()

    scenario("protocol error")
    c = device(broker, "dev-garbage")
    time.sleep(0.3)
    c.loop_stop()
    c.socket().send(b"\xf0\x00")  # reserved packet type 15
    time.sleep(0.5)

    scenario("plain TCP, no TLS handshake")
    with socket.create_connection(("127.0.0.1", broker.port)) as sock:
        sock.send(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        time.sleep(0.5)

    scenario("end")
    recorder.wait_quiet()
    recorder.client.disconnect()
    broker.stop()
    auth.shutdown()

    version = broker_version(recorder.lines)
    out = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).parent / (f"mosquitto-{version}-log.jsonl")
    )
    with out.open("w", encoding="utf-8") as fh:
        for line in recorder.lines:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(f"{len(recorder.lines)} lines -> {out}")


def broker_version(lines: list[dict[str, str]]) -> str:
    import subprocess

    text = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    return text.split()[2] if text.startswith("mosquitto version") else "unknown"


if __name__ == "__main__":
    main()
