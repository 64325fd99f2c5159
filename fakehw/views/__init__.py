"""What every viewer shares: the one daemon source (``source``) and what the host knows
of a GPU process (``procinfo``)."""
