"""Benchmarks of RestMQ beside bare baselines (``make bench``); apart from the tests."""
