"""fake-nvitop: nvitop 1.7.2 on the fake GPUs, and a cluster grid."""
