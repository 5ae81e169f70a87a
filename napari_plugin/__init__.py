"""napari plugin of idm-imaging: IDM reconstruction dock widget, scan reader/writer and offline sample data.

Registered through the npe2 manifest ``napari.yaml`` (entry point ``napari.manifest`` in pyproject.toml). The
reconstruction logic lives in the Qt-free :mod:`napari_plugin._engine`; importing this package does not import
napari or Qt.
"""

__all__ = ["IDMReconstructionWidget"]


def __getattr__(name):
    # lazy: the engine, reader and sample data must stay importable without napari/Qt
    if name == "IDMReconstructionWidget":
        from napari_plugin._widget import IDMReconstructionWidget

        return IDMReconstructionWidget
    raise AttributeError(name)
