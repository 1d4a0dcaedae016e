"""A PEP 517 / PEP 660 build backend in the standard library only.

Why not setuptools: building a wheel with setuptools needs setuptools and ``wheel`` in the
build environment, which pip downloads from the package index (or, with
``--no-build-isolation``, expects to be installed already). This backend needs nothing, so
``pip install clients/python`` works the same offline, in a bare venv, with or without build
isolation. The package is pure Python: a wheel is a zip of ``ledgerd/`` plus three metadata
files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ledgerd"
TAG = "py3-none-any"


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _metadata() -> str:
    p = _project()
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {p['name']}",
        f"Version: {p['version']}",
        f"Summary: {p['description']}",
        f"Requires-Python: {p['requires-python']}",
    ]
    lines += [f"Classifier: {c}" for c in p.get("classifiers", [])]
    readme = ROOT / p.get("readme", "README.md")
    if readme.exists():
        lines.append("Description-Content-Type: text/markdown")
        return "\n".join(lines) + "\n\n" + readme.read_text(encoding="utf-8")
    return "\n".join(lines) + "\n"


def _dist_info() -> str:
    p = _project()
    return f"{p['name']}-{p['version']}.dist-info"


def _wheel_name() -> str:
    p = _project()
    return f"{p['name']}-{p['version']}-{TAG}.whl"


def _package_files() -> list[Path]:
    files = []
    for path in sorted((ROOT / PACKAGE).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append(path)
    return files


def _write_wheel(wheel_directory: str, contents: list[tuple[str, bytes]]) -> str:
    dist_info = _dist_info()
    contents = contents + [
        (f"{dist_info}/METADATA", _metadata().encode()),
        (f"{dist_info}/WHEEL", (
            "Wheel-Version: 1.0\nGenerator: ledgerd_build\nRoot-Is-Purelib: true\n"
            f"Tag: {TAG}\n").encode()),
        (f"{dist_info}/top_level.txt", f"{PACKAGE}\n".encode()),
    ]
    record = []
    for name, data in contents:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    contents.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    name = _wheel_name()
    # A fixed date keeps the wheel byte-for-byte reproducible.
    stamp = (2020, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(Path(wheel_directory) / name, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in contents:
            info = zipfile.ZipInfo(arcname, stamp)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return name


# ---- PEP 517 ----


def get_requires_for_build_wheel(config_settings=None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings=None) -> list[str]:
    return []


def get_requires_for_build_editable(config_settings=None) -> list[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings=None) -> str:
    target = Path(metadata_directory) / _dist_info()
    target.mkdir(parents=True, exist_ok=True)
    (target / "METADATA").write_text(_metadata(), encoding="utf-8")
    (target / "WHEEL").write_text(
        f"Wheel-Version: 1.0\nGenerator: ledgerd_build\nRoot-Is-Purelib: true\nTag: {TAG}\n"
    )
    return target.name


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory: str, config_settings=None, metadata_directory=None) -> str:
    contents = [(path.relative_to(ROOT).as_posix(), path.read_bytes()) for path in _package_files()]
    return _write_wheel(wheel_directory, contents)


def build_editable(wheel_directory: str, config_settings=None, metadata_directory=None) -> str:
    """PEP 660: a wheel holding a .pth file that puts this checkout on sys.path."""
    return _write_wheel(wheel_directory, [(f"__editable__.{PACKAGE}.pth", f"{ROOT}\n".encode())])


def build_sdist(sdist_directory: str, config_settings=None) -> str:
    p = _project()
    base = f"{p['name']}-{p['version']}"
    name = f"{base}.tar.gz"
    members = ["pyproject.toml", "README.md", "build_backend/ledgerd_build.py"]
    members += [path.relative_to(ROOT).as_posix() for path in _package_files()]
    for folder in ("tests", "examples", "bench"):
        files = sorted((ROOT / folder).rglob("*.py"))
        members += [path.relative_to(ROOT).as_posix() for path in files]
    with tarfile.open(Path(sdist_directory) / name, "w:gz") as tar:
        for member in members:
            path = ROOT / member
            if path.exists():
                tar.add(path, arcname=f"{base}/{member}", recursive=False)
        pkg_info = _metadata().encode()
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        info.size = len(pkg_info)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(pkg_info))
    return name


__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

