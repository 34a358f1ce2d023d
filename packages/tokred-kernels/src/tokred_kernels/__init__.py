"""tokred_kernels."""
