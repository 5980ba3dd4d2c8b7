"""Triton kernels; each is an autograd Function beside the PyTorch reference it must match."""
