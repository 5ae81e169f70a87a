"""Write the crafted ("fuzz") scan files of tests/data/fuzz/: each a few KB, each hostile in one way.

    python tests/data/make_fuzz_corpus.py      # rewrites tests/data/fuzz/ (deterministic)

tests/test_untrusted_files.py feeds every file to read_scan, the command line and the napari reader; the files
are committed, so the tests do not depend on this script's library versions. EXPECTED maps each file to a
phrase its error message must hold.
"""

from __future__ import annotations

import gzip
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "fuzz"

EXPECTED = {
    # a complex k-space whose float type has exponent bias 255: libhdf5 segfaults converting it (h5py no longer
    # sees it as complex, so it is skipped as non-numeric)
    "h5_crash_float_bias.h5": "neither a fastMRI reconstruction nor k-space",
    "mat73_crash_float_bias.mat": "crashed",  # the same inside a MATLAB v7.3 variable: read, crashes the child
    "npy_header_bomb.npy": "limit",  # 144 bytes declaring 74.5 GiB
    "npy_truncated.npy": "truncated",
    "h5_kspace_bomb.h5": "limit",  # declares an 8 GiB k-space (chunked, never written)
    "h5_unrelated_huge.h5": None,  # a small image plus an unrelated 16 GiB dataset: reads (the image only)
    "mat73_bomb.mat": "limit",  # v7.3 variable of 32 GiB
    "nii_header_bomb.nii": "limit",  # NIfTI header claiming 7 TB
    "nii_gz_bomb.nii.gz": "limit",  # a .nii.gz whose header claims 4.4 GB
    "png_pixel_bomb.png": "limit",  # 100000 x 100000 pixels declared
    "dicom_zero_orientation.dcm": "ImageOrientationPatient",
    "dicom_zero_spacing.dcm": "PixelSpacing",
    "h5_garbage.h5": "cannot read",  # HDF5 signature, then noise
    "mat5_truncated.mat": "cannot read",
}


def _float_bias_patch(data: bytes, pattern: bytes, at: int, value: bytes) -> bytes:
    i = data.index(pattern)
    return data[: i + at] + value + data[i + at + len(value):]


def h5_crash(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:  # default (earliest) file format: uncompressed, no checksums
        f.create_dataset("kspace", data=(np.ones((2, 8, 8)) + 1j).astype(np.complex64))
    # first float32 property block (the kspace real part): exponent bias 127 -> 255
    data = _float_bias_patch(path.read_bytes(), b"\x20\x00\x17\x08\x00\x17\x7f\x00\x00\x00", 6, b"\xff")
    path.write_bytes(data)


def _mat73(path: Path, name: str, make) -> None:
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        d = make(f)
        d.attrs["MATLAB_class"] = np.bytes_("double")
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116) + b"\x00" * 8 + b"\x00\x02IM"
    with open(path, "r+b") as fh:
        fh.write(head)


def mat73_crash(path: Path) -> None:
    cplx = np.dtype([("real", "<f8"), ("imag", "<f8")])  # MATLAB's complex layout
    _mat73(path, "img", lambda f: f.create_dataset("img", data=np.ones((8, 8), cplx)))
    # first float64 property block (the real part): exponent bias 1023 -> 2047
    data = _float_bias_patch(path.read_bytes(), b"\x40\x00\x34\x0b\x00\x34\xff\x03\x00\x00", 6, b"\xff\x07")
    path.write_bytes(data)


def npy_header_bomb(path: Path) -> None:
    with open(path, "wb") as f:  # the header alone
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (100000, 100000)})


def npy_truncated(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ones((64, 64), np.float32))
    path.write_bytes(path.read_bytes()[:1000])


def h5_kspace_bomb(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:  # chunked and never written: no bytes on disk
        f.create_dataset("kspace", shape=(64, 4096, 4096), dtype=np.complex64, chunks=(1, 64, 64))


def h5_unrelated_huge(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("reconstruction_rss", data=np.linspace(0, 1, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16))
        f.create_dataset("unrelated", shape=(4, 1024, 1024, 1024), dtype=np.float32, chunks=(1, 1, 64, 64))


def mat73_bomb(path: Path) -> None:
    _mat73(path, "img", lambda f: f.create_dataset("img", shape=(65536, 65536), dtype=np.float64,
                                                    chunks=(64, 64)))


def _nifti_header(shape: tuple[int, ...], datatype: int, bitpix: int) -> bytes:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype({16: np.float32, 64: np.float64}[datatype])
    hdr.set_data_shape(shape)
    assert hdr["bitpix"] == bitpix
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\x00" * 4


def nii_header_bomb(path: Path) -> None:
    path.write_bytes(_nifti_header((32767, 32767, 32767), 16, 32))  # 32767^3 float32 = 130 TB


def nii_gz_bomb(path: Path) -> None:
    # 1024^3 float32 = 4 GiB declared; the data is a run of zeros that would inflate to it (only 1 MB here)
    payload = _nifti_header((1024, 1024, 1100), 16, 32) + b"\x00" * 1024**2
    path.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))


def png_pixel_bomb(path: Path) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 2000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _dicom(path: Path, **tags) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from pydicom import Dataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    makers = {
        "h5_crash_float_bias.h5": h5_crash,
        "mat73_crash_float_bias.mat": mat73_crash,
        "npy_header_bomb.npy": npy_header_bomb,
        "npy_truncated.npy": npy_truncated,
        "h5_kspace_bomb.h5": h5_kspace_bomb,
        "h5_unrelated_huge.h5": h5_unrelated_huge,
        "mat73_bomb.mat": mat73_bomb,
        "nii_header_bomb.nii": nii_header_bomb,
        "nii_gz_bomb.nii.gz": nii_gz_bomb,
        "png_pixel_bomb.png": png_pixel_bomb,
        "dicom_zero_orientation.dcm": lambda p: _dicom(p, ImageOrientationPatient=[0, 0, 0, 0, 0, 0]),
        "dicom_zero_spacing.dcm": lambda p: _dicom(p, PixelSpacing=[0, 0]),
        "h5_garbage.h5": lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + np.random.default_rng(0).bytes(2000)),
        "mat5_truncated.mat": lambda p: p.write_bytes(b"MATLAB 5.0 MAT-file".ljust(116) + b"\x00" * 8
                                                      + b"\x00\x01IM" + b"\x0e\x00\x00\x00\xff\xff\x00\x00"),
    }
    assert set(makers) == set(EXPECTED)
    for name, make in makers.items():
        path = OUT / name
        path.unlink(missing_ok=True)
        make(path)
        print(f"{name:<30} {path.stat().st_size:>8} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
