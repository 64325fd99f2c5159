"""The ``fakehw`` command and its subcommands that are neither the daemon nor a view:
the tmux demo, the offline simulation, the Prometheus exporter, and the shims that put
the fake GPUs under other programs (``exec``, ``shellenv``)."""
