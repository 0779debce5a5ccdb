"""The PEP 517 build backend behind `pip install .` (pyproject.toml names it).

picklewire is a CMake project; Debian ships no scikit-build, so this small backend drives CMake
itself and packs the wheel by hand (the wheel format is a zip with a dist-info: PEP 427/491):

    picklewire/                    the package: the pure-Python files, the extension _picklewire.*.so,
                                   _version.py (from project() in CMakeLists.txt: the one version)
    picklewire-V.data/scripts/     the `picklewire` command
    picklewire-V.dist-info/        METADATA, WHEEL, entry_points.txt (python/entry_points.txt), RECORD

It needs nothing from an index (`pip install --no-build-isolation .` works offline) and builds for
the interpreter that runs pip. config_settings: `build-dir=PATH` reuses a CMake build directory
(default: a fresh temporary one), `jobs=N` (default: the CPU count).
"""
import base64
import hashlib
import io
import os
import re
import stat
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "picklewire"
SDIST_PARTS = ["CMakeLists.txt", "README.md", "pyproject.toml", ".ci", "include", "src", "transport", "tools",
               "python", "tests", "examples", "bench", "docs"]


def _version():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    m = re.search(r"project\(\s*picklewire\s+VERSION\s+([0-9][0-9.]*)", cmake)
    if not m:
        raise RuntimeError("no `project(picklewire VERSION x.y.z` in CMakeLists.txt")
    return m.group(1)


def _summary():
    m = re.search(r'DESCRIPTION\s+"([^"]*)"', (ROOT / "CMakeLists.txt").read_text())
    return m.group(1) if m else ""


def _metadata():
    return (f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {_version()}\nSummary: {_summary()}\n"
            "Requires-Python: >=3.9\nRequires-Dist: numpy\nDescription-Content-Type: text/markdown\n\n"
            + (ROOT / "README.md").read_text())


def _tag():
    impl = f"cp{sys.version_info.major}{sys.version_info.minor}"
    abi = impl + getattr(sys, "abiflags", "")
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{impl}-{abi}-{plat}"


def _dist_info_files():
    return {
        "METADATA": _metadata().encode(),
        "WHEEL": f"Wheel-Version: 1.0\nGenerator: picklewire_build\nRoot-Is-Purelib: false\nTag: {_tag()}\n".encode(),
        "entry_points.txt": (ROOT / "python" / "entry_points.txt").read_bytes(),
        "top_level.txt": b"picklewire\n",
    }


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    dist_info = Path(metadata_directory) / f"{NAME}-{_version()}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    for name, data in _dist_info_files().items():
        (dist_info / name).write_bytes(data)
    return dist_info.name


def _cmake_build(build_dir, jobs):
    configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DPython3_EXECUTABLE={sys.executable}", "-DPICKLEWIRE_BUILD_TESTS=OFF",
                 "-DPICKLEWIRE_BUILD_BENCH=OFF"]
    subprocess.run(configure, check=True, stdout=sys.stderr)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", "_picklewire", "picklewire_cli", "-j", str(jobs)],
                   check=True, stdout=sys.stderr)


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    settings = config_settings or {}
    jobs = int(settings.get("jobs") or os.cpu_count() or 1)
    version = _version()
    with tempfile.TemporaryDirectory(prefix="picklewire-wheel-") as scratch:
        build_dir = Path(settings.get("build-dir") or Path(scratch) / "build")
        _cmake_build(build_dir, jobs)
        package = build_dir / "python" / NAME
        files = {}  # arcname -> (bytes, executable)
        for f in sorted(package.iterdir()):  # symlinks to python/picklewire/ and the built files
            if f.is_file() and not f.name.endswith(".pyc"):
                files[f"{NAME}/{f.name}"] = (f.read_bytes(), False)
        if not any(a.startswith(f"{NAME}/_picklewire.") for a in files):
            raise RuntimeError(f"the extension was not built into {package}")
        files[f"{NAME}-{version}.data/scripts/picklewire"] = ((build_dir / "picklewire").read_bytes(), True)
        dist_info = f"{NAME}-{version}.dist-info"
        for name, data in _dist_info_files().items():
            files[f"{dist_info}/{name}"] = (data, False)

        wheel_name = f"{NAME}-{version}-{_tag()}.whl"
        record = [_record_line(a, d) for a, (d, _) in files.items()] + [f"{dist_info}/RECORD,,"]
        with zipfile.ZipFile(Path(wheel_directory) / wheel_name, "w", zipfile.ZIP_DEFLATED) as z:
            for arcname, (data, executable) in files.items():
                info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, data)
            z.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel_name


def build_sdist(sdist_directory, config_settings=None):
    base = f"{NAME}-{_version()}"
    name = f"{base}.tar.gz"
    skip = re.compile(r"(^|/)(__pycache__|\.git)(/|$)|\.pyc$|^tests/fuzz/corpus-run")
    with tarfile.open(Path(sdist_directory) / name, "w:gz") as tar:
        for part in SDIST_PARTS:
            path = ROOT / part
            if not path.exists():
                continue
            for f in sorted([path] if path.is_file() else path.rglob("*")):
                rel = f.relative_to(ROOT).as_posix()
                if f.is_file() and not skip.search(rel):
                    tar.add(f, arcname=f"{base}/{rel}", recursive=False)
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata().encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return name
