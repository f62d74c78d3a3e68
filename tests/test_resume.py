"""A run killed with SIGKILL mid-write, then finished with --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from protect.cli import app
from tests.conftest import PHOTOS

runner = CliRunner()


def outputs(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def kill_during_writes(out: Path, after: int, sig: int = signal.SIGKILL) -> int:
    command = [sys.executable, "-m", "protect", "images", str(PHOTOS), "--out", str(out), "--seed", "3", "--epochs", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / ".protect" / "done.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if journal.exists() and len(journal.read_text().splitlines()) >= after:
                os.kill(process.pid, sig)
                break
            time.sleep(0.002)
    finally:
        process.wait()
    assert process.returncode != 0, "the run ended before it could be interrupted"
    return process.returncode


def test_killed_run_resumes_to_identical_outputs(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    result = runner.invoke(app, ["images", str(PHOTOS), "--out", str(reference), "--seed", "3", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"

    kill_during_writes(out, after=6)
    finished_before = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.jpg") if not p.name.startswith(".")
    }
    assert 6 <= len(finished_before) < 24

    result = runner.invoke(app, ["images", str(PHOTOS), "--out", str(out), "--resume", "--epochs", "1"])

    assert result.exit_code == 0, result.output
    assert outputs(out) == outputs(reference)
    for path, identity in finished_before.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity, f"{path.name} was written twice"
    assert not (out / ".protect").exists()
    assert not list(out.rglob("*.protect-tmp"))


def test_resume_rejects_changed_settings(tmp_path: Path) -> None:
    out = tmp_path / "out"
    kill_during_writes(out, after=2)
    result = runner.invoke(app, ["images", str(PHOTOS), "--out", str(out), "--resume", "--epochs", "1", "--epsilon", "4"])
    assert result.exit_code == 2
    assert "other settings" in result.output


def test_resume_rejected_in_place(cifar_png: Path) -> None:
    result = runner.invoke(app, ["images", str(cifar_png), "--in-place", "--resume"])
    assert result.exit_code == 2


def test_ctrl_c_finishes_current_write_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = kill_during_writes(out, after=3, sig=signal.SIGINT)
    assert code == 130
    assert not list(out.rglob("*.protect-tmp"))
    journaled = (out / ".protect" / "done.jsonl").read_text().splitlines()
    written = [p for p in out.rglob("*.jpg")]
    assert len(written) == len(journaled)  # no output outside the journal

    result = runner.invoke(app, ["images", str(PHOTOS), "--out", str(out), "--resume", "--epochs", "1"])

    assert result.exit_code == 0, result.output
    assert len(list(out.rglob("*.jpg"))) == 24
