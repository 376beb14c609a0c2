"""The environment helpers (web/env.py) read strictly: a value they cannot take stops the
process with a message naming the variable and what it accepts, never a quiet default."""

from __future__ import annotations

from pathlib import Path

import pytest

from web.env import ConfigError, env, env_bool, env_float, env_int, env_list, env_map


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "On", " on "])
def test_true_has_four_spellings(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SECURE", value)
    assert env_bool("SECURE") is True


@pytest.mark.parametrize("value", ["0", "false", "No", "OFF"])
def test_false_has_four_spellings(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SECURE", value)
    assert env_bool("SECURE", default=True) is False


@pytest.mark.parametrize("value", ["ture", "y", "2", "enabled"])
def test_anything_else_is_refused_not_read_as_false(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SECURE", value)
    with pytest.raises(ConfigError, match=r"SECURE=.* is not a boolean: use 1, true, yes, on"):
        env_bool("SECURE", default=True)


def test_unset_and_empty_values_are_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECURE", raising=False)
    assert env_bool("SECURE", default=True) is True
    monkeypatch.setenv("SECURE", "")  # what compose and systemd env files leave
    assert env_bool("SECURE", default=True) is True
    monkeypatch.setenv("BCRYPT_ROUNDS", "")
    assert env_int("BCRYPT_ROUNDS", 10) == 10


def test_numbers_must_be_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCRYPT_ROUNDS", " 12 ")
    assert env_int("BCRYPT_ROUNDS", 10) == 12
    monkeypatch.setenv("BCRYPT_ROUNDS", "12.5")
    with pytest.raises(ConfigError, match=r"BCRYPT_ROUNDS='12.5' is not a whole number"):
        env_int("BCRYPT_ROUNDS", 10)
    monkeypatch.setenv("POLICY_REFRESH_SECONDS", "0.25")
    assert env_float("POLICY_REFRESH_SECONDS", 1.0) == 0.25
    monkeypatch.setenv("POLICY_REFRESH_SECONDS", "1s")
    with pytest.raises(ConfigError, match=r"POLICY_REFRESH_SECONDS='1s' is not a number"):
        env_float("POLICY_REFRESH_SECONDS", 1.0)


def test_a_file_variable_holds_the_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    monkeypatch.delenv("MQTT_AUTH_SECRET", raising=False)
    monkeypatch.setenv("MQTT_AUTH_SECRET_FILE", str(tmp_path / "secret"))
    assert env("MQTT_AUTH_SECRET") == "s3cret"
    monkeypatch.setenv("MQTT_AUTH_SECRET", "given")  # the variable itself wins
    assert env("MQTT_AUTH_SECRET") == "given"


def test_an_unreadable_file_variable_stops(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MQTT_AUTH_SECRET", raising=False)
    missing = tmp_path / "nope"
    monkeypatch.setenv("MQTT_AUTH_SECRET_FILE", str(missing))
    with pytest.raises(ConfigError, match=rf"MQTT_AUTH_SECRET_FILE={missing}: cannot read it"):
        env("MQTT_AUTH_SECRET")
    monkeypatch.setenv("MQTT_AUTH_SECRET_FILE", str(tmp_path))  # a directory
    with pytest.raises(ConfigError, match="give a readable file holding the value"):
        env("MQTT_AUTH_SECRET")


def test_lists_drop_blank_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", " a.example, ,b.example,")
    assert env_list("ALLOWED_HOSTS") == ["a.example", "b.example"]


def test_a_map_is_key_value_pairs_and_refuses_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEMETRY_UNITS", "temperature=°C, humidity = % ,,rssi=dBm")
    assert env_map("TELEMETRY_UNITS") == {"temperature": "°C", "humidity": "%", "rssi": "dBm"}
    monkeypatch.setenv("TELEMETRY_UNITS", "temperature")
    with pytest.raises(ConfigError, match=r"TELEMETRY_UNITS: 'temperature' is not key=value"):
        env_map("TELEMETRY_UNITS")
    monkeypatch.setenv("TELEMETRY_UNITS", "=°C")
    with pytest.raises(ConfigError):
        env_map("TELEMETRY_UNITS")
