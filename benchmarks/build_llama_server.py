"""Build llama.cpp's own ``llama-server`` from the llama-cpp-python sdist of the installed version.

The benchmark compares heylookllm with the C++ server of the very llama.cpp commit that llama-cpp-python
vendors, built with the flags llama-cpp-python's own build uses (its CMakeLists.txt: shared libraries, Release,
``GGML_NATIVE`` default on, OpenMP default on, no curl), so that both run the same kernels.

Idempotent: the binary is cached under ``benchmarks/results/llama-server/<version>/`` (git-ignored) together with
``build.json`` (the version, the cmake flags, the compiler); a second run only checks that it is there.

    .venv/bin/python benchmarks/build_llama_server.py          # build if missing, print the binary's path
    .venv/bin/python benchmarks/build_llama_server.py --force  # rebuild

Not part of the test command. It took 34 minutes on 2 cores shared with other work (``-j`` defaults to the
core count). The build tree under ``work/`` is kept: the binary finds its shared libraries there (build RPATH).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

log = logging.getLogger("build_llama_server")

RESULTS = Path(__file__).resolve().parent / "results"

# The flags llama-cpp-python 0.3.x's CMakeLists.txt sets or leaves at llama.cpp's defaults on Linux x86-64.
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=ON",
    "-DGGML_OPENMP=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]


def installed_version() -> str:
    return metadata.version("llama_cpp_python")


def server_dir(version: str, results: Path = RESULTS) -> Path:
    return results / "llama-server" / version


def server_binary(version: str | None = None, results: Path = RESULTS) -> Path | None:
    """The cached llama-server binary for the installed llama-cpp-python, or None when not built yet."""
    binary = server_dir(version or installed_version(), results) / "bin" / "llama-server"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def fetch_sdist(version: str, work: Path) -> Path:
    """The sdist from pip's cache or the configured index, through pip itself."""
    existing = sorted(work.glob(f"llama_cpp_python-{version}.tar.gz"))
    if existing:
        return existing[0]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={version}",
            "-d",
            str(work),
        ],
        check=True,
    )
    return next(work.glob(f"llama_cpp_python-{version}.tar.gz"))


def build(version: str, results: Path, jobs: int, force: bool) -> Path:
    target = server_dir(version, results)
    binary = server_binary(version, results)
    if binary is not None and not force:
        log.info("cached: %s", binary)
        return binary
    work = target / "work"
    work.mkdir(parents=True, exist_ok=True)
    sdist = fetch_sdist(version, work)
    source = work / f"llama_cpp_python-{version}"
    if not source.is_dir():
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
    llama_cpp = source / "vendor" / "llama.cpp"
    build_dir = work / "build"
    started = time.monotonic()
    subprocess.run(["cmake", "-S", str(llama_cpp), "-B", str(build_dir), *CMAKE_FLAGS], check=True)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", "llama-server", f"-j{jobs}"], check=True)
    bin_dir = target / "bin"
    if bin_dir.exists():
        shutil.rmtree(bin_dir)
    bin_dir.mkdir(parents=True)
    built = build_dir / "bin"
    # llama-server and the shared libraries it loads from its own folder (RPATH $ORIGIN on the build tree's bin).
    for item in built.iterdir():
        if item.name == "llama-server" or ".so" in item.name:
            shutil.copy2(item, bin_dir / item.name, follow_symlinks=True)
    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    info = {
        "llama_cpp_python": version,
        "cmake_flags": CMAKE_FLAGS,
        "compiler": compiler[0] if compiler else "",
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (target / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    result = server_binary(version, results)
    if result is None:
        raise RuntimeError(f"llama-server not found after the build in {built}")
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even when the binary is cached")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--version", default=None, help="llama-cpp-python version (default: the installed one)")
    args = parser.parse_args(argv)
    binary = build(args.version or installed_version(), args.results, args.jobs, args.force)
    print(binary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
