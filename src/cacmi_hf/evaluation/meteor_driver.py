"""The package's METEOR driver (``java/MeteorThreads.java``), compiled once per machine.

METEOR 1.5's ``-stdio`` mode aligns one line at a time and normalises every sentence again in
each pair it occurs in. ``MeteorThreads`` answers the same ``SCORE`` lines with the same jar
classes and the same statistics, but spreads them over threads sharing one copy of the tables
and normalises each distinct sentence once (on ActivityNet val: 196 s -> 122 s of alignment on
one thread). It needs ``javac`` (a JDK) once, to compile against the jar; without one, METEOR
runs through the jar's own loop, with the same scores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .paraphrase_table import default_cache_dir

logger = logging.getLogger(__name__)
MAIN_CLASS = "MeteorThreads"
SOURCE = Path(__file__).with_name("java") / f"{MAIN_CLASS}.java"


def find_javac(java_path: str) -> str | None:
    """The ``javac`` of the JDK that ``java_path`` belongs to, else the one on PATH, else None."""
    beside = Path(os.path.realpath(java_path)).with_name("javac")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("javac")


def _compile(javac: str, jar: Path, out_dir: Path) -> None:
    base = [javac, "-nowarn", "-encoding", "UTF-8", "-cp", str(jar), "-d", str(out_dir), str(SOURCE)]
    # Class files for Java 8, so any runtime runs them; a JDK that cannot target 8 builds for itself.
    result = subprocess.run([javac, "--release", "8", "-Xlint:-options", *base[1:]], capture_output=True, text=True)
    if result.returncode != 0 and "release" in result.stderr:
        result = subprocess.run(base, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"javac could not compile {SOURCE.name}: {result.stderr.strip()[-2000:]}")


def driver_classpath(java_path: str, jar: Path, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Folder holding the compiled driver for ``jar`` (compiling it on first use), or None without javac.

    Compiled classes are kept under ``cache_dir`` (default ``$CACMI_HF_CACHE/meteor``), keyed by
    the source, the jar and the compiler; where that folder cannot be written they go to a
    temporary folder for this process.
    """
    javac = find_javac(java_path)
    if javac is None:
        logger.info("No javac found: METEOR runs in the jar's single-threaded loop (same scores, slower).")
        return None
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), str(jar.resolve()).encode(), str(jar.stat().st_size).encode(),
                 os.path.realpath(javac).encode()):
        key.update(part + b"\0")
    target = Path(cache_dir or default_cache_dir()) / f"driver-{key.hexdigest()[:16]}"
    if (target / f"{MAIN_CLASS}.class").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix="driver-", dir=target.parent))
    except OSError:  # read-only cache: build for this process only
        build = Path(tempfile.mkdtemp(prefix="cacmi_meteor_driver_"))
        target = build
    try:
        _compile(javac, jar, build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    if build != target:
        try:
            os.replace(build, target)
        except OSError:  # another process put it there first
            shutil.rmtree(build, ignore_errors=True)
    return target
