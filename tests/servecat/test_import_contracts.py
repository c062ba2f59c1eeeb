"""The layer contract of DESIGN.md (.importlinter) holds, and breaks on an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "servecat", "engine", "bench", "targets", "catalog", "resources", "assets",
            "pipeline")
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT), "--config", str(root / ".importlinter"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_hold():
    r = _lint(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_an_upward_import_breaks_them(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "csrc"))
    shutil.copy(REPO / ".importlinter", tmp_path)
    (tmp_path / "servecat" / "probe.py").write_text("import catalog.build\n")
    (tmp_path / "bench" / "probe.py").write_text("import resources.store\n")
    (tmp_path / "engine" / "probe.py").write_text("import dagster\n")
    (tmp_path / "targets" / "probe.py").write_text("import resources.store\n")
    (tmp_path / "servecat" / "probe_cli.py").write_text("import cli.main\n")
    r = _lint(tmp_path)
    assert r.returncode != 0
    assert "servecat is not allowed to import catalog" in r.stdout
    assert "servecat.probe -> catalog.build" in r.stdout
    assert "bench is not allowed to import resources" in r.stdout
    assert "engine is not allowed to import dagster" in r.stdout
    assert "targets is not allowed to import resources" in r.stdout
    assert "servecat is not allowed to import cli" in r.stdout
