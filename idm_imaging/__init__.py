"""idm-imaging: Invertible Diffusion Models for compressed-sensing image and MRI reconstruction.

Data flows one way: scan -> operator -> measurement -> model -> image -> metrics.
"""

__version__ = "0.1.0"

from idm_imaging.datasets import data_root

__all__ = ["IDM", "__version__", "data_root"]


def __getattr__(name):
    # Lazy: importing the operators or I/O must not pay for diffusers.
    if name == "IDM":
        from idm_imaging.models import IDM

        return IDM
    raise AttributeError(f"module 'idm_imaging' has no attribute {name!r}")
