"""pgqueue benchmarks: one subcommand of `python -m bench` per row of the benchmark plan."""
