"""pymulproc 0.1.2's own test suite, run against mulproc.pymulproc with
only its import lines changed.

The sdist is downloaded once with pip and cached under the repository's
``target/pymulproc-sdist``; its tests are copied to a temporary folder,
``from pymulproc import ...`` becomes ``from mulproc.pymulproc import ...``
(nothing else changes: the test checks that), and pytest runs them in a
subprocess. pymulproc's files are never written into the repository's
sources."""

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "target" / "pymulproc-sdist"
SDIST = "pymulproc-0.1.2.tar.gz"
TESTS = ["test_queue_operations.py", "test_queue_communication.py", "test_pipe_communication.py"]
IMPORT = re.compile(r"^(\s*)(from|import)\s+pymulproc\b")


def _sdist():
    path = CACHE / SDIST
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "pymulproc==0.1.2", "-d", str(CACHE)],
            check=True, timeout=300,
        )
    return path


def _rewrite(source):
    out, changed = [], 0
    for line in source.splitlines(keepends=True):
        new = IMPORT.sub(lambda m: f"{m.group(1)}{m.group(2)} mulproc.pymulproc", line)
        changed += new != line
        out.append(new)
    return "".join(out), changed


def test_pymulproc_own_suite_passes(tmp_path):
    with tarfile.open(_sdist()) as tar:
        for name in TESTS:
            member = tar.getmember(f"pymulproc-0.1.2/tests/{name}")
            source = tar.extractfile(member).read().decode("utf-8")
            rewritten, changed = _rewrite(source)
            assert changed >= 1, f"{name}: no pymulproc import found"
            # Only import lines differ.
            for old, new in zip(source.splitlines(), rewritten.splitlines()):
                assert old == new or IMPORT.match(old), (old, new)
            (tmp_path / name).write_text(rewritten)
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b10 passed\b", result.stdout), result.stdout[-3000:]
    assert "failed" not in result.stdout.splitlines()[-1]
