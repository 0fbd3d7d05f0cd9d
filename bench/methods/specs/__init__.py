"""The built-in methods' torch-free declarations (hyper-parameters and stages); importing
this package registers them."""

from bench.methods.specs import (  # noqa: F401
    causal,
    dan,
    dann,
    ddc,
    geometric,
    mask_supervision,
    mim_fcr_ar,
    supervised,
)
