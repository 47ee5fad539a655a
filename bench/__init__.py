"""sandbox-bench: the harness (config, runner, workloads, records, stats, cost, reports)."""
