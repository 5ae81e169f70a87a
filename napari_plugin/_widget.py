"""The "IDM reconstruction" dock widget.

The widget only gathers parameters and shows results; the work is :func:`napari_plugin._engine.reconstruct`,
run in napari's ``thread_worker`` so the viewer stays responsive. Progress advances after every batch of slices,
Cancel stops between batches and nothing is added to the viewer until a run completes. Errors become napari
notifications.

Example::

    >>> import napari
    >>> from napari_plugin import IDMReconstructionWidget
    >>> viewer = napari.Viewer()
    >>> w = IDMReconstructionWidget(viewer)
    >>> viewer.window.add_dock_widget(w, name="IDM reconstruction")
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from napari_plugin import _engine
from napari_plugin._engine import CHECKPOINT, MASK_KINDS, PSEUDO_INVERSE, Acquisition, Job

__all__ = ["IDMReconstructionWidget"]

_MODES = {
    "Single-coil MRI (simulated)": "fourier",
    "Block CS (natural images)": "block_cs",
    "Measured k-space + mask": "measured",
}
_MODEL_DEFAULT = "model default"  # the ensemble the model's config names


def _layer_array(layer) -> np.ndarray:
    """Complex data kept by the reader (napari shows magnitude) or the layer's own data, as numpy."""
    data = np.asarray(layer.data)
    cplx = layer.metadata.get("idm_complex") if isinstance(layer.metadata, dict) else None
    if cplx is not None and np.shape(cplx) == data.shape:
        return np.asarray(cplx)
    return data


def _last_axes(matrix: np.ndarray, ndim: int) -> np.ndarray:
    """The (ndim + 1)-square affine of a layer's last ``ndim`` axes (the input may have more dims than 2-D data)."""
    m = np.asarray(matrix)
    keep = list(range(m.shape[0] - 1 - ndim, m.shape[0]))
    return m[np.ix_(keep, keep)]


class IDMReconstructionWidget(Container):
    """Dock widget: simulate an acquisition of an image layer (or take measured k-space) and reconstruct it."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.worker = None
        self._cancel = threading.Event()
        self._model_cache: dict[tuple[str, str, int | None], Any] = {}

        self.input = ComboBox(label="input image", choices=self._image_layers)
        self.mode = ComboBox(label="acquisition", choices=list(_MODES), value="Single-coil MRI (simulated)")
        self.mask_kind = ComboBox(label="mask kind", choices=list(MASK_KINDS), value="random")
        self.acceleration = FloatSpinBox(label="acceleration", value=4.0, min=1.5, max=64.0, step=0.5)
        self.center_fraction = FloatSpinBox(label="centre fraction (0 = auto)", value=0.0, min=0.0, max=0.5,
                                            step=0.01)
        self.ratio = FloatSpinBox(label="CS ratio", value=0.1, min=0.01, max=1.0, step=0.01)
        self.block_size = ComboBox(label="block size", choices=[8, 16, 32, 64], value=32)
        self.permute = CheckBox(label="scrambled (permute)", value=True)
        self.kspace = ComboBox(label="k-space layer", choices=self._kspace_layers, nullable=True)
        self.mask = ComboBox(label="mask layer", choices=self._mask_layers, nullable=True)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.sigma = FloatSpinBox(label="noise sigma", value=0.0, min=0.0, max=1.0, step=0.001)
        self.model = ComboBox(label="model", choices=self._model_choices)
        self.checkpoint = FileEdit(label="checkpoint folder", mode="d")
        self.ensemble = ComboBox(label="ensemble", choices=[_MODEL_DEFAULT, "1", "2", "4", "8"],
                                 value=_MODEL_DEFAULT,
                                 tooltip="average this many reconstructions of the flipped / rotated problem: more is "
                                         "sharper and slower (each costs one reconstruction); model default for "
                                         "the embedded cs: 2, and 1 on a CPU with bf16 off")
        self.device = ComboBox(label="device", choices=_engine.available_devices())
        # CPU: one slice per step so progress moves at once; accelerators: batches fill the device
        self.batch_size = SpinBox(label="batch size", value=1 if self.device.value == "cpu" else 8, min=1, max=256)
        self.bf16 = CheckBox(label="bf16", value=False)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.metrics = Label(label="metrics", value="")
        self.extend([self.input, self.mode, self.mask_kind, self.acceleration, self.center_fraction, self.ratio,
                     self.block_size, self.permute, self.kspace, self.mask, self.seed, self.sigma, self.model,
                     self.checkpoint, self.ensemble, self.device, self.batch_size, self.bf16, self.run_button,
                     self.cancel_button, self.progress, self.metrics])

        self._auto_model = True  # the model follows the acquisition (as on the command line) until one is chosen
        self._setting_model = False
        self.mode.changed.connect(self._update_visibility)
        self.model.changed.connect(self._on_model_changed)
        for w in (self.ratio, self.acceleration):
            w.changed.connect(self._follow_default_model)
        self.device.changed.connect(self._update_bf16)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed,
                   self.viewer.layers.events.reordered):
            ev.connect(self._refresh_layers)
        self._update_visibility()
        self._update_bf16()

    # -- choices ---------------------------------------------------------------------------------
    def _image_layers(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.metadata.get("idm_kind") != "kspace"]

    def _kspace_layers(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.metadata.get("idm_complex") is not None]

    def _mask_layers(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, (Image, Labels))]

    def _model_choices(self, _widget=None):
        return _engine.model_choices(self.acquisition_task())

    def acquisition_task(self) -> str:
        return "cs" if _MODES[self.mode.value] == "block_cs" else "mri"

    def _refresh_layers(self, _event=None):
        for w in (self.input, self.kspace, self.mask):
            w.reset_choices()

    def _update_visibility(self, _event=None):
        mode = _MODES[self.mode.value]
        for w in (self.mask_kind, self.acceleration, self.center_fraction):
            w.visible = mode == "fourier"
        for w in (self.ratio, self.block_size, self.permute):
            w.visible = mode == "block_cs"
        for w in (self.kspace, self.mask):
            w.visible = mode == "measured"
        self.input.visible = self.sigma.visible = mode != "measured"
        current = self.model.value
        self._setting_model = True
        try:
            self.model.reset_choices()
            if current in self.model.choices:
                self.model.value = current
            else:  # the chosen model is not one of this task's: follow the acquisition again
                self._auto_model = True
        finally:
            self._setting_model = False
        self._follow_default_model()
        self.checkpoint.visible = self.model.value == CHECKPOINT

    def default_model(self) -> str | None:
        """The embedded model the command line picks for the current acquisition (None: none installed)."""
        try:
            return _engine.default_model(self.acquisition())
        except (ValueError, TypeError):  # parameters being edited
            return None

    def _follow_default_model(self, _event=None):
        target, setting = _engine.model_setting(self.model.value)
        if setting and not self._at_setting(setting):  # an alias moved off its setting: the model by its own name
            self._setting_model = True
            try:
                self.model.value = target
            finally:
                self._setting_model = False
        if not self._auto_model:
            return
        name = self.default_model()
        if name is not None and name in self.model.choices and name != self.model.value:
            self._setting_model = True
            try:
                self.model.value = name
            finally:
                self._setting_model = False

    def _at_setting(self, setting: dict) -> bool:
        """Whether the acquisition's ratio / acceleration is the one an alias stands for."""
        boxes = {"ratio": self.ratio, "acceleration": self.acceleration}
        return all(abs(float(boxes[k].value) - float(v)) < 1e-6 for k, v in setting.items() if k in boxes)

    def _on_model_changed(self, _event=None):
        if not self._setting_model:  # the user's choice: keep it, unless it is the default itself
            self._auto_model = False
            _, setting = _engine.model_setting(self.model.value)
            for key, value in setting.items():  # an alias (e.g. "mri-8x") sets the acquisition it stands for
                box = {"ratio": self.ratio, "acceleration": self.acceleration}.get(key)
                if box is not None:
                    box.value = value
            self._auto_model = self.model.value == self.default_model()
        self.checkpoint.visible = self.model.value == CHECKPOINT

    def _update_bf16(self, _event=None):
        """bf16 is offered, and on, where it is faster (native support on the device): elsewhere it is slower."""
        from idm_imaging.inference import bf16_is_fast

        try:
            fast = bf16_is_fast(self.device.value)
        except ValueError:
            fast = False
        self.bf16.value = fast
        self.bf16.enabled = fast
        self.bf16.text = "bf16 (faster here)" if fast else "bf16 (no native support on this device)"
        self.bf16.tooltip = ("run the model under bfloat16 autocast" if fast else
                             "this device has no native bfloat16: it would be slower than float32")

    # -- run -------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    def acquisition(self) -> Acquisition:
        cf = float(self.center_fraction.value)
        return Acquisition(mode=_MODES[self.mode.value], ratio=float(self.ratio.value),
                           block_size=int(self.block_size.value), permute=bool(self.permute.value),
                           mask_kind=self.mask_kind.value, acceleration=float(self.acceleration.value),
                           center_fraction=cf if cf > 0 else None, seed=int(self.seed.value),
                           sigma=float(self.sigma.value))

    def _job(self) -> tuple[Job, Any]:
        """The run's :class:`Job` and the layer its outputs take their geometry from, collected and checked on the
        GUI thread so bad input is reported before the worker starts (raises ValueError with a clear message)."""
        acq = self.acquisition()
        settings = {"device": self.device.value, "batch_size": int(self.batch_size.value),
                    "precision": "bf16" if self.bf16.value and self.bf16.enabled else "fp32"}
        if acq.mode == "measured":
            if self.kspace.value is None or self.mask.value is None:
                raise ValueError("measured k-space: choose a k-space layer (complex data) and a mask layer")
            ref_layer = self.kspace.value
            return Job(acq, name=ref_layer.name, kspace=_layer_array(ref_layer), mask=np.asarray(self.mask.value.data),
                       **settings), ref_layer
        ref_layer = self.input.value
        if ref_layer is None:
            raise ValueError("input image: choose an image layer")
        if getattr(ref_layer, "rgb", False):
            raise ValueError(f"input image {ref_layer.name!r} is RGB: convert it to grayscale first")
        data = _layer_array(ref_layer)
        if data.ndim not in (2, 3):
            raise ValueError(f"input image {ref_layer.name!r} must be 2-D or 3-D, got shape {data.shape}")
        return Job(acq, image=data, name=ref_layer.name, **settings), ref_layer

    def _get_model(self, choice: str, checkpoint: str | None, ensemble: int | None = None):
        if choice == PSEUDO_INVERSE:
            return None
        key = (choice, str(checkpoint) if choice == CHECKPOINT else "", ensemble)
        if key not in self._model_cache:
            self._model_cache.clear()  # one model at a time: they are large
            self._model_cache[key] = _engine.load_model(choice, checkpoint, ensemble)
        return self._model_cache[key]

    def run(self, _event=None):
        """Start a reconstruction in a worker thread (no-op while one is running)."""
        if self.running:
            return
        try:
            job, layer = self._job()
        except (ValueError, TypeError) as exc:
            show_error(f"IDM reconstruction: {exc}")
            return
        choice = self.model.value
        checkpoint = str(self.checkpoint.value) if choice == CHECKPOINT else None
        shown_name = Path(checkpoint).name if checkpoint else choice
        ensemble = None if self.ensemble.value == _MODEL_DEFAULT else int(self.ensemble.value)
        self._cancel.clear()

        def work():
            yield _engine.Progress(0, 1, "loading model" if choice != PSEUDO_INVERSE else "")
            model = self._get_model(choice, checkpoint, ensemble)
            return (yield from _engine.reconstruct(job, model=model, model_name=shown_name, cancel=self._cancel))

        # errors are shown by _on_error as one notification, not re-raised into the Qt event loop
        worker = thread_worker(work, start_thread=False, ignore_errors=True)()
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: self._on_returned(result, layer))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self._on_returned(None, layer))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.metrics.value = "running..."
        worker.start()

    def cancel(self, _event=None):
        """Stop the running reconstruction between two batches; nothing is added to the viewer."""
        self._cancel.set()
        if self.worker is not None:
            self.worker.quit()

    # -- worker callbacks (GUI thread) -----------------------------------------------------------
    def _on_progress(self, p: _engine.Progress):
        self.progress.max = max(p.total, 1)
        self.progress.value = p.done
        if p.message:
            self.metrics.value = p.message

    def _on_returned(self, result, layer):
        if result is None:
            self.metrics.value = "cancelled"
            show_info("IDM reconstruction cancelled")
            return
        scan = layer.metadata.get("scan")
        ndim = layer.data.ndim
        for out in result.layers:
            meta = dict(out.metadata)
            if scan is not None:
                meta["scan"] = scan
            is_error = meta.get("idm_imaging", {}).get("method", "").startswith("|")
            self.viewer.add_image(out.data, name=out.name, metadata=meta, colormap="magma" if is_error else "gray",
                                  scale=layer.scale[-ndim:], translate=layer.translate[-ndim:],
                                  affine=_last_axes(layer.affine.affine_matrix, ndim))
        self.metrics.value = (result.summary() or "done (no fully sampled reference: no metrics)") + \
            f"\n{result.seconds:.1f} s"

    def _on_error(self, exc: BaseException):
        self.metrics.value = "failed"
        show_error(f"IDM reconstruction failed: {exc}")

    def _on_finished(self):
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
