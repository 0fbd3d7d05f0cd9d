"""The built-in methods' torch-free declarations (hyper-parameters and stages); importing
this package registers them."""

from bench.methods.specs import causal, dan, dann, ddc, mim_fcr_ar, supervised  # noqa: F401
