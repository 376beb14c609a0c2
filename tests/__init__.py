"""The test suite; tests/brokers.py is also the benchmarks' harness (bench/)."""
