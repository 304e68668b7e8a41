"""A training process killed with SIGKILL mid-epoch and resumed from its last checkpoint ends bit-identical to the
same run uninterrupted: model, optimizer, scheduler, random states, history, everything in the final state."""
import math, signal, subprocess, sys
from pathlib import Path

import torch

from mlpipe.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name('train_resume_worker.py')
BATCHES_PER_EPOCH = 35  # 9,000 training images of the sample in batches of 256, the last partial one dropped
KILL_AFTER_STEP = BATCHES_PER_EPOCH + 10  # mid second epoch, a step that saves: the kill may land mid-write

def worker(folder: Path, mode: str) -> list:
    return [sys.executable, str(WORKER), str(folder), mode]

def assert_same(a, b, where='state'):
    "Assert two nests of dicts, lists and tensors are equal, tensors bit for bit; a failure names the first difference."
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        same_kind = (a.dtype, a.shape) == (b.dtype, b.shape)
        assert same_kind, f"{where}: {a.dtype}{list(a.shape)} != {b.dtype}{list(b.shape)}"
        # equal value for value, NaN where NaN (PruneEasy marks the samples not scored yet with NaN)
        same = torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))
        assert same, f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a.keys() ^ b.keys())} differ"
        for k in a: assert_same(a[k], b[k], f'{where}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)): assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, float) and math.isnan(a): assert math.isnan(b), f"{where}: nan != {b}"
    else: assert a == b, f"{where}: {a!r} != {b!r}"

def test_killed_run_resumes_bit_identical(tmp_path):
    full, killed = tmp_path/'full', tmp_path/'killed'
    # the uninterrupted run beside the one to kill: each process has one thread, and the machine two cores
    whole = subprocess.Popen(worker(full, 'full'), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    proc = subprocess.Popen(worker(killed, 'full'), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if int(line) >= KILL_AFTER_STEP:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
        assert whole.wait(timeout=120) == 0, whole.stderr.read()
    finally:
        for p in (proc, whole):
            if p.poll() is None: p.kill()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {proc.stderr.read()}"
    assert not (killed/'final.pt').exists()
    saved = load_checkpoint(killed/'last.pt')  # whole, though the kill may have come while it was being replaced
    assert saved['epoch'] == 1 and 0 < saved['batch'] < BATCHES_PER_EPOCH, "the checkpoint resumed from is mid-epoch"

    subprocess.run(worker(killed, 'resume'), cwd=ROOT, check=True, capture_output=True, timeout=120)
    assert not list(killed.glob('.*.tmp')), "a save killed mid-write leaves a temporary file; the next save removes it"
    expected, resumed = load_checkpoint(full/'final.pt'), load_checkpoint(killed/'final.pt')
    assert_same(resumed, expected)
    assert resumed['step'] == resumed['scheduler']['last_epoch'] == 2 * BATCHES_PER_EPOCH
    assert 'running_mean' in ' '.join(resumed['model']) and resumed['optimizer']['state']  # all compared is there
