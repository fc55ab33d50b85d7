"""Compile the core's hot modules in place (``omnijourney.native`` says which and why).

    python -m omnijourney.nativebuild [build|clean|status]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from omnijourney.native import GROUP, MANIFEST, MODULES, SRC, _digest, _extensions, mode, source


def clean() -> None:
    for path in _extensions():
        path.unlink()


def build() -> bool:
    """Compile ``MODULES`` in place; the manifest says what was compiled (nothing, when
    it could not be). True when compiled."""
    clean()
    manifest: dict[str, Any] = {"modules": {}}
    setup = ("import os\nfrom setuptools import setup\nfrom mypyc.build import mypycify\n"
             "setup(name='omnijourney_core', ext_modules=mypycify("
             f"{[str(source(m).relative_to(SRC)) for m in MODULES]!r}, opt_level='3', "
             f"group_name={GROUP!r}, target_dir=os.environ['OMNIJOURNEY_NATIVE_C']))\n")
    with tempfile.TemporaryDirectory(prefix="omnijourney-native-") as tmp:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", setup, "build_ext", "--inplace", "--build-temp",
                 str(Path(tmp) / "temp")],
                check=False, cwd=SRC, capture_output=True, text=True, timeout=900,
                env={**os.environ, "OMNIJOURNEY_NATIVE_C": str(Path(tmp) / "c"),
                     "MYPY_CACHE_DIR": str(Path(tmp) / "cache")})
        except (OSError, subprocess.TimeoutExpired) as exc:
            proc = subprocess.CompletedProcess([], 1, "", str(exc))
    shutil.rmtree(SRC / "build", ignore_errors=True)
    if proc.returncode != 0 or len(_extensions()) != len(MODULES) + 1:
        clean()
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        print(f"omnijourney: could not compile the core, it runs from its sources:\n{tail}",
              file=sys.stderr)
        manifest["error"] = tail
    else:
        manifest["modules"] = {m: _digest(source(m)) for m in MODULES}
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return bool(manifest["modules"])


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "build":
        built = build()
        print(f"omnijourney core: {'compiled' if built else 'sources'}")
        return 0
    if command == "clean":
        clean()
        MANIFEST.unlink(missing_ok=True)
        return 0
    if command == "status":
        print(f"omnijourney core: {mode()}")
        return 0
    print("usage: python -m omnijourney.nativebuild [build|clean|status]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
