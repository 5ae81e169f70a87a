"""Make docs/napari_widget.png: napari with the IDM reconstruction widget after a run on the synthetic brain.

Run (needs an X server; headless: Xvfb):
    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python docs/make_screenshot.py
Uses the default model of the widget for the MRI task (an embedded IDM when shipped, else the pseudo-inverse).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main(out: Path = Path(__file__).resolve().parent / "napari_widget.png") -> Path:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="idm-imaging: IDM reconstruction", show=True)
    viewer.window._qt_window.resize(1280, 900)
    viewer.open_sample("idm-imaging", "brain")
    _, w = viewer.window.add_plugin_dock_widget("idm-imaging", "IDM reconstruction")
    w.mode.value = "Single-coil MRI (simulated)"
    w.mask_kind.value = "random"
    w.acceleration.value = 4.0
    w.run_button.clicked.emit()
    t0 = time.time()
    while w.running and time.time() - t0 < 300:
        QApplication.processEvents()
        time.sleep(0.02)
    if w.running:
        raise RuntimeError("reconstruction did not finish within 300 s")
    # side by side: reference, zero-filled / IDM, |error|
    viewer.grid.enabled = True
    viewer.grid.shape = (1, len(viewer.layers))
    for layer in viewer.layers:
        layer.visible = True
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    img = viewer.screenshot(canvas_only=False, flash=False)
    tmp = out.with_name(out.stem + ".tmp.png")
    from skimage.io import imsave

    imsave(tmp, img, check_contrast=False)
    os.replace(tmp, out)
    print(f"wrote {out} {img.shape}; {w.metrics.value!r}")
    viewer.close()
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
