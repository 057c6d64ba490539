"""A full disk, for real: a small tmpfs (mounting one needs root; the tests skip otherwise), the pipeline run in a
subprocess on it. Writing the preprocessing cache there is one `error:` line with the space it needs and the space
free (not a SIGBUS from a memory map over a sparse file), and a staging folder a killed run left behind is cleared
before the run writes anything, so it cannot keep the disk full for every later run."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import make_image_folder
from tests.reliability.conftest import cli, write_config


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs at tmp_path/small, unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def project(tmp_path, small_disk):
    """12 images; the run folder on the small disk; a 384 px cache needs 5.3 MB of it."""
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=6)
    return write_config(tmp_path / "proj", f"path:{data}", run={"name": "r", "workdir": str(small_disk / "runs")},
                        datablock={"cache": True, "verify": False}, train={"image_size": 384})


@pytest.mark.slow
def test_a_cache_that_does_not_fit_is_one_line_with_the_space_needed_and_free(project, small_disk):
    p = cli(project, "run", "--stages", "download,datablock")
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert re.fullmatch(rf"error: cannot write {small_disk}/runs/r/\.datablock\.staging-\d+/cache\.npy: No space left "
                        r"on device \(needs 5\.\d MB, [\d.]+ MB free\)(; .*)?", line), line
    assert not list((small_disk / "runs/r").glob(".datablock.staging*"))  # nothing left taking the space


def test_a_stale_staging_folder_is_cleared_before_anything_is_written(project, small_disk):
    """What a killed datablock left (a staging folder filling the disk) is removed before config.json is written."""
    stale = small_disk / "runs/r/.datablock.staging-99999999"  # a process that is gone
    stale.mkdir(parents=True)
    with open(stale / "cache.npy", "wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    p = cli(project, "run", "--stages", "download", "--set", "datablock.cache=false")
    assert p.returncode == 0, p.stderr[-2000:]
    assert not stale.exists() and (small_disk / "runs/r/config.json").is_file()
