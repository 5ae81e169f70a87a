"""Image-quality metrics for the two evaluation protocols used by the paper and by fastMRI.

* Natural images (IDM / ISTA-Net+ protocol): :func:`psnr_y`, :func:`ssim_y` on the Y channel of YCbCr, 0-255 scale,
  data range 255; :func:`rgb_to_y` is MATLAB's ``rgb2ycbcr`` luma.
* MRI (fastMRI protocol): :func:`fastmri_metrics` -> ``{"psnr", "ssim", "nmse"}`` on magnitudes, optional centre
  crop, data range = max of the target volume; built on the generic :func:`psnr`, :func:`ssim`, :func:`nmse`.

All functions take ``(pred, target)`` as torch tensors or numpy arrays and return Python floats.
SSIM is scikit-image's ``structural_similarity`` (7x7 uniform window, as in the IDM and fastMRI reference code).
"""

from idm_imaging.metrics.core import nmse, psnr, ssim
from idm_imaging.metrics.fastmri import fastmri_metrics
from idm_imaging.metrics.natural import psnr_y, rgb_to_y, ssim_y

__all__ = ["psnr_y", "ssim_y", "rgb_to_y", "fastmri_metrics", "psnr", "ssim", "nmse"]
