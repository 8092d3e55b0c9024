"""A training cell killed mid-epoch (SIGTERM, SIGKILL) resumes from its last epoch's checkpoint
and ends with the metrics of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.records import load_records

PLUGIN = '''
"""A classifier CAM whose training steps are logged to $CK_LOG (and slowed by $CK_SLOW)."""
import os
import time

from bench import ClassifierCam, register_method


@register_method("ck_cls", backbone="test_resnet", weights="none")
class CkCls(ClassifierCam):
    """ClassifierCam on timm's tiny test ResNet, one log line per training step."""

    def training_step(self, x, y):
        with open(os.environ["CK_LOG"], "a") as fh:
            fh.write("step\\n")
        if os.environ.get("CK_SLOW"):
            time.sleep(float(os.environ["CK_SLOW"]))
        return super().training_step(x, y)
'''

#: 3 epochs of 2 steps (8 images per epoch, batches of 4)
SPEC = "ck_cls[epochs=3,input_size=32,batch_size=4,epoch_size=8,warmup_epochs=0]"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ck_plugins")
    (folder / "ck_cls.py").write_text(PLUGIN)
    return folder


def steps(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_training_resumes_from_its_last_epoch(sig: signal.Signals, tmp_path: Path,
                                                     smoke5k_root: Path, plugin_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "steps.log"
    monkeypatch.setenv("CK_LOG", str(log))
    args = ["run", "--include", str(plugin_dir), "--methods", SPEC, "--datasets", "smoke5k",
            "--data-root", f"smoke5k={smoke5k_root}", "--n-boot", "20", "--device", "cpu"]
    # the reference: one uninterrupted run
    reference = tmp_path / "reference"
    assert main([*args, "--out", str(reference)]) == 0
    assert steps(log) == 6
    log.unlink()
    # the same run, killed in its second epoch (its first epoch's checkpoint is written)
    out = tmp_path / "killed"
    env = {**os.environ, "CK_SLOW": "0.5"}
    cmd = [sys.executable, "-c", "import sys; from bench.cli import main; "
           "sys.exit(main(sys.argv[1:]))", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while steps(log) < 3:  # epoch 1 = steps 1-2; step 3 is epoch 2's first
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    proc.wait()
    (checkpoint,) = out.glob("cache/*/train/checkpoint.pt")
    (history,) = out.glob("cache/*/train/log.jsonl")
    assert len(history.read_text().splitlines()) == 1  # one finished epoch
    assert not list(out.rglob("model/DONE"))
    assert not (out / "records").exists()
    log.unlink()
    assert main([*args, "--out", str(out)]) == 0
    assert steps(log) == 4  # epochs 2 and 3 only, not from zero
    assert not checkpoint.exists()  # the trained state is saved: the checkpoint goes
    (a,) = load_records(reference)
    (b,) = load_records(out)
    assert b["metrics"] == a["metrics"] and b["ci"] == a["ci"]
    assert b["threshold"] == a["threshold"]
