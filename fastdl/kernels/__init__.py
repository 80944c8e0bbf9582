"""Compute kernels: NumPy arrays in, NumPy arrays out; forward and backward side by side.

Nothing here knows about Tensors or autograd. One module per kernel family.
"""
