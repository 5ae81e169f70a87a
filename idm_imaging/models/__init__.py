"""Models: the reversible engine, measurement injectors, the reversible UNet and :class:`IDM`.

Operators are duck-typed (``A``, ``A_dagger``, ``is_complex``); nothing here imports training or cli code.
"""

from .idm import IDM, ImageAdapter, tiny_backbone_config
from .injector import Injector
from .registry import ALIASES, REGISTRY, resolve_checkpoint, resolve_name
from .reversible import Coupling, ReversibleSequence, checkpointed
from .unet import SUPPORTED_BACKBONES, ReversibleUNet

__all__ = [
    "IDM", "ImageAdapter", "tiny_backbone_config", "Injector", "REGISTRY", "ALIASES", "resolve_checkpoint",
    "resolve_name", "Coupling",
    "ReversibleSequence", "checkpointed", "SUPPORTED_BACKBONES", "ReversibleUNet",
]
