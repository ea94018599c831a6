"""Check that a source archive ships every git-tracked file a wheel build or the test suite needs.

Usage: ``python tools/check_sdist.py dist/perceptual_kernels-<version>.tar.gz`` from the checkout. Tracked files
are compared with the archive's members; only the paths in ``NOT_SHIPPED`` may be missing, and no build
product (extension, build info, caches) may be present. Exits with 1 and the lists otherwise.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tarfile

# Tracked files deliberately left out of the source archive: CI / editor configuration and benchmark records.
NOT_SHIPPED = (".ci/*", ".gitignore", ".pre-commit-config.yaml", "benchmarks/results/*")
# Build products that must never be in it (a stale _build_info.json makes a wheel misreport its torch).
NEVER_SHIPPED = ("*.so", "*.pyc", "*/__pycache__/*", "perceptual_kernels/_build_info.json", "build/*")


def archive_files(path: str) -> set[str]:
    with tarfile.open(path) as archive:
        return {m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile() and "/" in m.name}


def main(path: str) -> int:
    tracked = set(subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split())
    shipped = archive_files(path)
    missing = sorted(f for f in tracked - shipped if not any(fnmatch.fnmatch(f, p) for p in NOT_SHIPPED))
    unwanted = sorted(f for f in shipped if any(fnmatch.fnmatch(f, p) for p in NEVER_SHIPPED))
    for title, files in (("missing from the sdist (MANIFEST.in)", missing), ("build products in the sdist", unwanted)):
        if files:
            print(f"{path}: {title}:", *files, sep="\n  ")
    if missing or unwanted:
        return 1
    print(f"{path}: {len(shipped)} files, every tracked file shipped except {', '.join(NOT_SHIPPED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
