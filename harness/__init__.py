"""The harness: agreement checks, throughput sweeps, roofline, tables, plots, selection."""
