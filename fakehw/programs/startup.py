"""What a one-shot viewer may load before it prints: the start-up budget's owner.

``fake-nvidia-smi`` (its table, ``--query-gpu``, ``-L``) starts within 1.5 x
``python3 -c pass`` on an 8-GPU node (``bench/run.py --only startup``), as the real
nvidia-smi starts within 1.34 x on a real H100 host. The interpreter's start is the
floor; what is left is importing, connecting and rendering, and importing is what
grows unseen. So beyond the interpreter's own modules, the one-shot path loads:

- of the standard library, only ``ONE_SHOT_STDLIB`` (and what they load: ``json``
  brings ``re``): ``_socket`` and ``_signal`` rather than ``socket`` and ``signal``,
  whose Python layers build enums as they load (8 and 7 ms here, more than the
  connection and the table together); no ``typing`` (``fakehw.TYPE_CHECKING``
  instead of ``typing.TYPE_CHECKING``), no ``contextlib``, no ``argparse``;
- of fakehw, only ``ONE_SHOT_ROOMS``: no physics, tools or training log.

``tests/test_layers.py`` runs the one-shot commands and holds both lists.
"""

ONE_SHOT_STDLIB = ("__future__", "_signal", "_socket", "errno", "importlib", "json", "select")
ONE_SHOT_ROOMS = ("fakehw.contract", "fakehw.programs", "fakehw.service.client",
                  "fakehw.service.protocol", "fakehw.service.runtime", "fakehw.smi",
                  "fakehw.views")  # fmt: skip
