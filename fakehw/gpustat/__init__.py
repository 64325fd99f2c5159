"""fake-gpustat: gpustat 1.1.1 on the fake GPUs."""
