"""The contract: what every room may lean on, numpy-free and importing nothing of the
package but itself — the snapshot schema and its names (phases, faults), identities,
versions, settings and the ``[HOST:]PORT`` form (``fakehw/specs.py``, the datasheets,
belongs here too and keeps the path the design names)."""
