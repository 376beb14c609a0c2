"""Units of telemetry metrics, for chart axes, legends and the latest-values table.

Devices publish bare numbers; the unit is what the operator says (the TELEMETRY_UNITS
setting) or, failing that, what the metric's name ends in: `temp_c` is in °C,
`humidity_pct` in %. A name that says nothing gets no unit rather than a guess.
"""

from __future__ import annotations

from django.conf import settings

# The last `_`-separated part of a metric's name, lower-cased, and the unit it names.
SUFFIXES = {
    "c": "°C",
    "celsius": "°C",
    "f": "°F",
    "k": "K",
    "pct": "%",
    "percent": "%",
    "v": "V",
    "mv": "mV",
    "a": "A",
    "ma": "mA",
    "w": "W",
    "kw": "kW",
    "wh": "Wh",
    "kwh": "kWh",
    "pa": "Pa",
    "hpa": "hPa",
    "kpa": "kPa",
    "ppm": "ppm",
    "lux": "lx",
    "lx": "lx",
    "db": "dB",
    "dbm": "dBm",
    "hz": "Hz",
    "rpm": "rpm",
    "s": "s",
    "ms": "ms",
    "m": "m",
    "mm": "mm",
    "cm": "cm",
    "km": "km",
    "kmh": "km/h",
    "mps": "m/s",
    "l": "L",
    "lpm": "L/min",
    "b": "B",
    "kb": "kB",
    "mb": "MB",
}


def unit_of(metric: str) -> str:
    """The unit of one metric: the setting's, else its name's suffix's, else ""."""
    configured = settings.TELEMETRY_UNITS.get(metric)
    if configured is not None:
        return configured
    head, sep, suffix = metric.rpartition("_")
    return SUFFIXES.get(suffix.lower(), "") if sep and head else ""
