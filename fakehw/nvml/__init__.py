"""The NVML layer: pynvml (nvidia-ml-py) programs see the fake GPUs.

``fakehw exec -- CMD`` puts a ``sitecustomize`` on CMD's ``PYTHONPATH`` that
calls ``fakehw.nvml.hook.install()``: when the program imports ``pynvml``,
``pynvml.nvmlLib`` becomes a ``FakeNvmlLibrary`` instead of the driver's
``libnvidia-ml.so.1``. nvitop, gpustat and any pynvml script then run
unmodified on the fakehw daemon's GPUs.
"""
