"""Benchmarks of callscribe on real parts: ``python -m bench.latency`` (see ``bench/README.md``)."""
