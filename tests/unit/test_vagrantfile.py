"""The Vagrantfile: required settings are present, and ``vagrant validate`` accepts it when vagrant is here.

``vagrant validate --ignore-provider`` needs no provider (VirtualBox, libvirt) installed; without
``--ignore-provider`` vagrant refuses to validate on a machine with no usable provider at all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VAGRANTFILE = ROOT / "Vagrantfile"


def test_vagrantfile_has_the_required_settings() -> None:
    text = VAGRANTFILE.read_text()
    assert re.search(r'ENV\.fetch\("CDNLAB_BOX", "debian/bookworm64"\)', text)
    assert "CPUS = 2" in text and "MEMORY_MB = 4096" in text
    for provider in ("virtualbox", "libvirt"):
        assert f'config.vm.provider "{provider}"' in text
    assert '"/home/vagrant/cdnlab"' in text
    assert re.search(r'override\.vm\.synced_folder "\.", "/home/vagrant/cdnlab", type: "rsync"', text)
    assert "cd /home/vagrant/cdnlab && make setup" in text
    assert "Apple Silicon" in text and "arm64" in text


def _validate(workdir: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VAGRANT_HOME=str(home), VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1")
    return subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    shutil.which("vagrant") is None, reason="vagrant is not installed (apt-get install vagrant)"
)
def test_vagrant_validate(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("Vagrantfile", "Makefile"):
        shutil.copy(ROOT / name, work / name)
    r = _validate(work, tmp_path / "vagrant.d")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout

    # the check can fail: a setting that does not exist is reported
    (work / "Vagrantfile").write_text(
        (ROOT / "Vagrantfile").read_text().replace('config.vm.hostname = "cdnlab"', "config.vm.no_such = 1")
    )
    bad = _validate(work, tmp_path / "vagrant.d")
    assert bad.returncode != 0 and "no_such" in bad.stdout + bad.stderr
