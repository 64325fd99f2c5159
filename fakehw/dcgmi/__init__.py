"""``fake-dcgmi``: DCGM 4.6's ``dcgmi`` on the fake GPUs of one node (``FAKEHW_NODE``):
``discovery``, ``dmon``, ``health``, ``diag -r 1`` and ``stats``, each in its own module,
laid out by the shared ``tables``; ``engine`` is the one seam to the daemon."""
