"""``python -m bench.cli ...`` is ``bench ...`` (worker processes and benchmarks start it this way)."""

from bench.cli import main

main()
