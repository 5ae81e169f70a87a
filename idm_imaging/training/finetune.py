"""Stage (b): IDM end-to-end fine-tuning on the output, for one task.

For a clean patch ``x`` (B, 1, P, P): ``y = A x (+ sigma n)``, ``x_hat = IDM(y, A)``, ``L = mean |x_hat - x|``
(``finetune.loss = "l1"``) or ``L = mean_i 10 log10 MSE(x_hat_i, x_i)`` (``"psnr"``: minus the mean PSNR, so that
every ratio / acceleration of a range counts alike); complex images: over the real and imaginary parts.

- ``task = "cs"``: ``A = BlockCS(ratio, block_size, permute, seed, img_size=(P, P))`` on luminance patches in
  [0, 1] (complex data -> magnitude).
- ``task = "mri"``: ``A = SingleCoilFourier(make_mask("random", (P, P), acceleration, center_fraction, seed))``;
  complex data stay complex; magnitude data enter as real-valued complex.
- ``seed``: drawn from the step's generator with ``fresh_operator_per_step`` (the default: the model then works
  with any matrix / mask of its ratio / acceleration), else ``operator_seed`` for every step (one fixed matrix,
  as in the paper).

The model is ``IDM.from_diffusers(prior, T=T, task=task, **idm)`` (or ``IDM.from_pretrained(init)`` when
continuing from a trained IDM) with ``model.reversible`` from the config and is saved with
``IDM.save_pretrained``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from idm_imaging.training.config import RunConfig

__all__ = ["FinetuneStage"]


class FinetuneStage:
    """L1 fine-tuning of an IDM built from a prior UNet folder (see the module docstring)."""

    name = "finetune"

    def __init__(self, cfg: RunConfig):
        from idm_imaging.operators import build_operator  # noqa: F401  (fail early)

        self.cfg = cfg
        self.fc = cfg.finetune
        from idm_imaging.models.registry import resolve_checkpoint

        prior = cfg.model_ref(self.fc.prior)  # an embedded name ("prior-gray") or a resolved path
        self.prior_path = None
        if prior:
            try:
                self.prior_path = resolve_checkpoint(prior)
            except ValueError:
                raise ValueError(f"config key 'finetune.prior': {prior} is not a diffusers UNet folder "
                                 "nor an embedded prior name") from None
        self.init_source = cfg.model_ref(self.fc.init) or None  # IDM.from_pretrained takes either
        mode = cfg.data.complex_mode
        self.complex_mode = ("complex" if self.fc.task == "mri" else "magnitude") if mode == "auto" else mode
        if self.fc.task == "cs" and self.complex_mode == "complex":
            raise ValueError("config key 'data.complex_mode': block CS works on real images; use 'magnitude'")
        self._fixed_op = None

    def build_model(self) -> torch.nn.Module:
        from idm_imaging.models.idm import IDM, load_unet

        if self.init_source is not None:
            return self._continued_model()
        kwargs = dict(self.fc.idm)
        kwargs.setdefault("operator_config", self.operator_settings())
        if self.prior_path is None:  # finetune.backbone: a light design trained from random weights
            model = IDM(backbone_type=self.fc.backbone_type, backbone_config=dict(self.fc.backbone), T=self.fc.T,
                        task=self.fc.task, **kwargs)
            # The noise estimate starts at 0, so the untrained network is the pseudo-inverse, not noise.
            model.unet.zero_output()
            if self.fc.init_weights:
                from idm_imaging.models.registry import resolve_checkpoint
                from idm_imaging.training.checkpoint import load_model_weights

                try:
                    load_model_weights(model, resolve_checkpoint(self.cfg.model_ref(self.fc.init_weights)))
                except (OSError, RuntimeError, ValueError) as err:
                    raise ValueError(f"config key 'finetune.init_weights': {err}") from err
            model.reversible = self.fc.reversible
            return model
        unet, schedule = load_unet(self.prior_path, kwargs.pop("schedule", None), name="config key 'finetune.prior'")
        model = IDM.from_diffusers(unet, T=self.fc.T, task=self.fc.task, schedule=schedule, **kwargs)
        model.reversible = self.fc.reversible
        return model

    def _continued_model(self) -> torch.nn.Module:
        from idm_imaging.models import IDM

        try:
            # finetune.idm overrides the loaded config (e.g. a longer TV start); keys that change the weights fail here
            model = IDM.from_pretrained(self.init_source, **self.fc.idm)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"config key 'finetune.init': cannot load an IDM from {self.init_source!r}: {err}") from err
        for key, want in (("task", self.fc.task), ("T", self.fc.T)):
            if model.config[key] != want:
                raise ValueError(f"config key 'finetune.init': {self.init_source!r} has {key} = {model.config[key]!r}, "
                                 f"but finetune.{key} = {want!r}")
        model.register_to_config(operator_config=self.operator_settings())
        model.reversible = self.fc.reversible
        return model.float()

    def operator_settings(self) -> dict:
        """The acquisition the model is trained for, recorded in its config (users and the evaluation read it)."""
        fc = self.fc
        if fc.task == "cs":
            rec = {"type": "BlockCS", "ratio": fc.ratio, "block_size": fc.block_size, "permute": fc.permute,
                   "seed": fc.operator_seed, "fresh_per_step": fc.fresh_operator_per_step}
            if fc.ratio_range:
                del rec["ratio"], rec["seed"]
                rec["ratio_range"] = list(fc.ratio_range)
            return rec
        rec = {"type": "SingleCoilFourier", "mask": fc.mask_kinds[0], "acceleration": fc.acceleration,
               "center_fraction": fc.center_fraction, "fresh_per_step": fc.fresh_operator_per_step}
        if fc.acceleration_range or len(fc.mask_kinds) > 1:
            rec = {"type": "SingleCoilFourier", "acceleration_range": list(fc.acceleration_range or [fc.acceleration] * 2),
                   "mask_kinds": list(fc.mask_kinds), "fresh_per_step": fc.fresh_operator_per_step}
        return rec

    def draw_setting(self, gen: torch.Generator) -> tuple:
        """The step's ratio (CS) or (acceleration, mask kind, centre fraction) (MRI): fixed, or drawn from the
        configured ranges with the step's generator."""
        fc = self.fc
        u = float(torch.rand((), generator=gen, dtype=torch.float64)) if (fc.ratio_range or fc.acceleration_range) else 0.0
        if fc.task == "cs":
            return (fc.ratio_range[0] + u * (fc.ratio_range[1] - fc.ratio_range[0]),) if fc.ratio_range else (fc.ratio,)
        if fc.acceleration_range:
            lo, hi = fc.acceleration_range
            acc = lo * (hi / lo) ** u  # log-uniform: as many draws in 2x-4x as in 6x-12x
            kind = fc.mask_kinds[int(torch.randint(0, len(fc.mask_kinds), (1,), generator=gen))]
            return acc, kind, None  # the kind's default centre for that acceleration
        return fc.acceleration, fc.mask_kinds[0], fc.center_fraction

    def operator(self, gen: torch.Generator):
        """The step's operator: a fresh seed per step (``fresh_operator_per_step``) or one fixed operator."""
        from idm_imaging.operators import build_operator

        fc, p = self.fc, self.cfg.data.patch_size
        if not fc.fresh_operator_per_step and self._fixed_op is not None:
            return self._fixed_op
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) if fc.fresh_operator_per_step else fc.operator_seed
        setting = self.draw_setting(gen)
        if fc.task == "cs":
            op = build_operator("cs", (p, p), ratio=setting[0], block_size=fc.block_size, permute=fc.permute, seed=seed)
        else:
            acc, kind, centre = setting
            try:
                op = build_operator("mri", (p, p), mask_kind=kind, acceleration=acc, center_fraction=centre, seed=seed)
            except ValueError:  # a line count of P columns cannot reach every acceleration: the nearest one can
                op = build_operator("mri", (p, p), mask_kind=kind, acceleration=p / max(1, round(p / acc)),
                                    center_fraction=centre, seed=seed)
        if not fc.fresh_operator_per_step:
            self._fixed_op = op
        return op

    def loss(self, model, x: torch.Tensor, gen: torch.Generator, step: int) -> torch.Tensor:
        """``x``: (B, 1, P, P) float32 (CS) or complex64 (MRI)."""
        op = self.operator(gen).to(x.device)
        if self.fc.noise_sigma > 0:
            y = op.measure(x, sigma=self.fc.noise_sigma, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        else:
            y = op.A(x)
        x_hat = model(y, op)
        if torch.is_complex(x_hat) or torch.is_complex(x):
            x_hat, x = torch.view_as_real(x_hat.to(torch.complex64)), torch.view_as_real(x.to(torch.complex64))
        if self.fc.loss == "psnr":  # -PSNR per image (peak 1), averaged: every setting weighs the same
            mse = (x_hat.float() - x.float()).pow(2).flatten(1).mean(1)
            return 10 * torch.log10(mse + 1e-10).mean()
        return F.l1_loss(x_hat.float(), x.float())

    def save_model(self, model: torch.nn.Module, folder) -> None:
        model.save_pretrained(str(folder), safe_serialization=True)
