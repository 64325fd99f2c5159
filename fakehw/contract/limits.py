"""What a request may ask of the model, held on both sides of the socket: the daemon's
argument readers refuse it first (``fakehw.service.ops``), the model checks it again
(``fakehw.processes``, ``fakehw.faults``) for the callers in the same process."""

MAX_ECC_COUNT = 1_000_000  # corrected errors one ``inject ecc`` adds
CYCLE_S_RANGE = (0.05, 600.0)  # seconds: one training step's cycle (``set_phase cycle_s``)
INTENSITY_RANGE = (0.0, 1.5)  # the scale of a phase's work (``set_phase intensity``)
MAX_PROCESSES_PER_GPU = 64  # attach is refused beyond this: no unbounded growth
