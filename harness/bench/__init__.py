"""``adam-bench bench``: the throughput sweep, the roofline timed beside it, the model
workloads, the table ``backend=\"auto\"`` reads, and pytest-benchmark reports."""
