from __future__ import annotations

import json
import random
import signal
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from paho.mqtt.enums import CallbackAPIVersion

from monitor import demo


@dataclass
class Device:
    name: str
    client: mqtt.Client
    temperature: float = field(default_factory=lambda: random.uniform(18, 24))
    humidity: float = field(default_factory=lambda: random.uniform(35, 55))
    battery: float = field(default_factory=lambda: random.uniform(70, 100))
    sent: int = 0
    online: bool = False
    left: bool = False  # disconnected by --churn, not by the broker

    def reading(self) -> dict[str, float]:
        """A slow random walk: what a room sensor reports."""
        self.temperature += random.gauss(0, 0.1)
        self.humidity = min(100.0, max(0.0, self.humidity + random.gauss(0, 0.3)))
        self.battery = max(0.0, self.battery - random.uniform(0, 0.01))
        return {
            "temperature": round(self.temperature, 2),
            "humidity": round(self.humidity, 1),
            "battery": round(self.battery, 2),
            "rssi": random.randint(-90, -40),
        }


class Command(BaseCommand):
    help = (
        "Demo devices: each connects over TLS with its own account (demo-01, demo-02, ...) and "
        "publishes telemetry on devices/<name>/telemetry; with --churn some leave and come "
        "back. Ctrl-C disconnects them cleanly."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=3, help="Number of devices.")
        parser.add_argument("--rate", type=float, default=1.0, help="Messages/s per device.")
        parser.add_argument("--prefix", default="demo-", help="Account and client id prefix.")
        parser.add_argument(
            "--create-accounts",
            action="store_true",
            help="Create missing accounts with a devices/%%u/# rule; the shared demo password "
            f"is kept in VAR_DIR/{demo.PASSWORD_FILE} (0600).",
        )
        parser.add_argument(
            "--churn",
            type=float,
            default=0.0,
            help="Mean seconds between one device leaving or returning (0: never).",
        )
        parser.add_argument("--duration", type=float, default=0.0, help="Seconds (0: forever).")
        parser.add_argument("--qos", type=int, choices=[0, 1], default=1)
        parser.add_argument(
            "--mqtt311", action="store_true", help="MQTT 3.1.1 instead of 5 (RabbitMQ 3.10)."
        )
        parser.add_argument("--host", default=settings.MQTT_HOST)
        parser.add_argument("--port", type=int, default=settings.MQTT_PORT)
        parser.add_argument("--ca-file", default=settings.MQTT_CA_FILE)

    def handle(self, *args: Any, **options: Any) -> None:
        names = [f"{options['prefix']}{i:02d}" for i in range(1, options["count"] + 1)]
        password = self.password(names, options["create_accounts"])
        self.stopping = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stopping.set())
        devices = [self.device(name, password, options) for name in names]
        for device in devices:
            self.connect(device, options)
        self.stdout.write(
            f"{len(devices)} devices publishing {options['rate']}/s each to "
            f"{options['host']}:{options['port']}; Ctrl-C to stop."
        )
        try:
            self.publish_loop(devices, options)
        finally:
            for device in devices:
                if device.online:
                    device.client.disconnect()
                device.client.loop_stop()
            sent = sum(d.sent for d in devices)
            self.stdout.write(f"Stopped: {sent} messages sent by {len(devices)} devices.")

    def password(self, names: list[str], create: bool) -> str:
        password = demo.shared_password(create=create)
        if password is None:
            raise CommandError("No demo accounts yet: run with --create-accounts once.")
        if create:
            for name in names:
                demo.ensure_device(name, password)
        return password

    def device(self, name: str, password: str, options: dict[str, Any]) -> Device:
        protocol = mqtt.MQTTv311 if options["mqtt311"] else mqtt.MQTTv5
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol)
        client.username_pw_set(name, password)
        client.tls_set(ca_certs=options["ca_file"], cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(1, 30)
        device = Device(name, client)

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            device.online = not reason.is_failure
            if reason.is_failure:
                self.stderr.write(f"{name}: connection refused: {reason}")

        def on_disconnect(_c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
            device.online = False

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        return device

    def connect(self, device: Device, options: dict[str, Any]) -> None:
        device.client.connect_async(options["host"], options["port"], keepalive=30)
        device.client.loop_start()

    def publish_loop(self, devices: list[Device], options: dict[str, Any]) -> None:
        interval = 1.0 / options["rate"] if options["rate"] > 0 else 1.0
        started = time.monotonic()
        due = {d.name: started + random.uniform(0, interval) for d in devices}
        next_churn = self.next_churn(options["churn"])
        while not self.stopping.is_set():
            now = time.monotonic()
            if options["duration"] and now - started >= options["duration"]:
                return
            for device in devices:
                if due[device.name] <= now and device.online:
                    self.publish(device, options["qos"])
                    due[device.name] += interval
                elif due[device.name] <= now:
                    due[device.name] = now + interval
            if next_churn is not None and now >= next_churn:
                self.churn(random.choice(devices), options)
                next_churn = self.next_churn(options["churn"])
            self.stopping.wait(max(0.0, min(due.values()) - time.monotonic()))

    def publish(self, device: Device, qos: int) -> None:
        values = device.reading()
        if random.random() < 0.2:
            # Some devices report one metric per topic with a plain number.
            topic = f"devices/{device.name}/telemetry/temperature"
            device.client.publish(topic, str(values["temperature"]), qos=qos)
        else:
            device.client.publish(f"devices/{device.name}/telemetry", json.dumps(values), qos=qos)
        device.sent += 1

    def next_churn(self, mean: float) -> float | None:
        return time.monotonic() + random.expovariate(1 / mean) if mean > 0 else None

    def churn(self, device: Device, options: dict[str, Any]) -> None:
        if device.online:
            self.stdout.write(f"{device.name} leaves")
            device.client.disconnect()
            device.client.loop_stop()
            device.online = False
            device.left = True
        elif device.left:
            # Asynchronously, as at start: the broker may be away, and paho retries.
            self.stdout.write(f"{device.name} comes back")
            device.left = False
            self.connect(device, options)
