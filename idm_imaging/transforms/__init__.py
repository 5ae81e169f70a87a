"""MONAI array and dictionary transforms around the acquisition operators and the reconstruction model.

Acquisition (simulate ``y = A x + noise``): :class:`BlockCSAcquisition`/``d``, :class:`KspaceUndersample`/``d``.
Reconstruction (``x_hat`` from ``y`` and the stored acquisition record): :class:`IDMReconstruct`/``d``.

Dictionary keys written for an input key ``k`` (postfixes configurable):
``k_meas`` measurement, ``k_pinv`` pseudo-inverse / zero-filled image (MetaTensor, input's affine),
``k_acq`` acquisition record (JSON-serialisable dict), ``k_mask`` k-space mask (MRI only),
``k_recon`` reconstruction (MetaTensor, input's affine).
"""

from idm_imaging.transforms.acquisition import (
    AcquisitionResult,
    BlockCSAcquisition,
    BlockCSAcquisitiond,
    KspaceUndersample,
    KspaceUndersampled,
    operator_from_record,
    replay_acquisition,
)
from idm_imaging.transforms.reconstruction import IDMReconstruct, IDMReconstructd

__all__ = [
    "AcquisitionResult",
    "BlockCSAcquisition",
    "BlockCSAcquisitiond",
    "IDMReconstruct",
    "IDMReconstructd",
    "KspaceUndersample",
    "KspaceUndersampled",
    "operator_from_record",
    "replay_acquisition",
]
