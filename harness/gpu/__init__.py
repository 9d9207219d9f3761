"""The GPU without a GPU and with one: the kernels' machine code checked (``machine_code``)
and ``adam-bench gpu-report`` (``report``)."""
