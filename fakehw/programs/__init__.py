"""What every program shares: its entry point (``launch``: console scripts, ``python -m``,
``bin/``), how Ctrl-C, SIGTERM and a closed terminal end it (``signals``), and the
argument types its command line parses (``argtypes``). Loaded before anything else in
every program, so it imports only what the interpreter has loaded already."""
