"""Benchmark-only settings: the real settings plus a floor view (see bench/urls.py)."""

from web.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
