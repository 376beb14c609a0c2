"""The broker started as root, the way systemd, the go-auth container and `bin/run` as root
start it: Mosquitto 2.0 switches to `user mosquitto` before it opens the TLS files, the
plugin, its log and its pid file, so each must be usable by that user (design.md).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from brokerauth.models import Account
from tests.brokers import PLUGIN, Broker, live_port, make_certs
from tests.conftest import DEVICE_PASSWORD

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(os.geteuid() != 0, reason="only a broker started as root drops to a user"),
]

BROKER_USER = "mosquitto"


@pytest.fixture
def broker_home() -> Iterator[Path]:
    """A directory the dropped broker can enter (pytest's own are 0700 root), holding the
    plugin too: the checkout may sit where that user cannot reach, such as under /root."""
    home = Path(tempfile.mkdtemp(prefix="broker-as-root-"))
    home.chmod(0o755)
    shutil.copy2(PLUGIN, home / PLUGIN.name)
    yield home
    shutil.rmtree(home)


def broker_as_root(home: Path, certs: Path, live_server: Any) -> Broker:
    """A broker of the shipped template, `user mosquitto`, its files owned by that user."""
    account = pwd.getpwnam(BROKER_USER)  # bin/setup installs Debian's mosquitto, which makes it
    workdir = home / "broker"
    (workdir / "data").mkdir(parents=True)
    for path in (workdir, workdir / "data"):
        os.chown(path, account.pw_uid, account.pw_gid)
    return Broker(
        workdir=workdir,
        certs=certs,
        auth_port=live_port(live_server),
        secret=settings.MQTT_AUTH_SECRET,
        user=BROKER_USER,
        plugin=home / PLUGIN.name,
    )


def running_uid(broker: Broker) -> int:
    assert broker.process is not None
    status = Path(f"/proc/{broker.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_it_serves_tls_with_the_key_given_to_its_group(
    live_server: Any, device: Account, broker_home: Path
) -> None:
    certs = make_certs(broker_home / "certs", key_group=BROKER_USER)
    broker = broker_as_root(broker_home, certs, live_server).start()
    try:
        assert running_uid(broker) == pwd.getpwnam(BROKER_USER).pw_uid
        session = broker.session("alice", DEVICE_PASSWORD, "alice-root")
        assert session.connect() is not None and session.connected()
        assert not session.subscribe("devices/alice/ping").is_failure
        session.publish("devices/alice/ping", "pong")
        session.expect("pong")
        session.close()
    finally:
        broker.stop()


def test_it_cannot_start_with_a_key_only_root_reads(live_server: Any, broker_home: Path) -> None:
    # What certs/make-certs.sh writes without CERT_KEY_GROUP: a 0700 directory, a 0600 key.
    certs = make_certs(broker_home / "certs")
    broker = broker_as_root(broker_home, certs, live_server)

    with pytest.raises(RuntimeError, match="Permission denied"):
        broker.start()
