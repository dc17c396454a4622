"""Parameterised kernel generators: HiPPO matrices, SSM kernels, continuous kernel networks."""
from .cache import EvalKernelCache
from .hippo import DIAGONAL_INITS, MEASURES, NPLR, diagonal_init, dplr_init, hippo, nplr
from .continuous import KERNEL_NETS, RFFMLP, SIREN, GaborNet, KernelNet, MAGNet, kernel_net
from .ssm import (
    KERNELS,
    DiscreteSSM,
    S4DKernel,
    S4Kernel,
    SSMKernelBase,
    centred_kernel,
    dense_kernel,
    krylov,
    ssm_kernel,
    ssm_parameter_names,
    vandermonde_kernel,
)

__all__ = [
    "DIAGONAL_INITS", "MEASURES", "NPLR", "diagonal_init", "dplr_init", "hippo", "nplr",
    "KERNELS", "DiscreteSSM", "S4DKernel", "S4Kernel", "SSMKernelBase", "centred_kernel", "krylov",
    "ssm_kernel", "ssm_parameter_names", "vandermonde_kernel", "dense_kernel", "EvalKernelCache",
]
__all__ += ["KERNEL_NETS", "RFFMLP", "SIREN", "GaborNet", "KernelNet", "MAGNet", "kernel_net"]
