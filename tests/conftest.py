"""Shared fixtures: a private data cache per test session, the long runs some tests check (started with the session, in
the background: among them the docs site's stand-in for the docs and browser tests), and small datasets in their real
file formats."""
import hashlib, json, os, pickle, signal, subprocess, sys, time
from pathlib import Path
from types import SimpleNamespace

# One thread per process, set before torch (or numpy's BLAS) is imported here or in any process a test starts: the
# suite runs several processes at once (two notebooks in kernels, torchrun's workers, a run beside the one it kills),
# and torch's second thread on a busy core waits at every operation's barrier (a small CNN's training step measured
# 10x slower with two threads than with one, beside two busy processes on 2 cores). A value already set is kept.
os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')

ROOT = Path(__file__).resolve().parents[1]
CIFAR_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


@pytest.fixture(scope='session', autouse=True)
def data_cache(tmp_path_factory):
    "Keep every test's datasets out of the user's cache."
    root = tmp_path_factory.mktemp('mlpipe-data')
    old = os.environ.get('MLPIPE_DATA')
    os.environ['MLPIPE_DATA'] = str(root)
    yield root
    if old is None: os.environ.pop('MLPIPE_DATA', None)
    else: os.environ['MLPIPE_DATA'] = old


def pytest_configure(config):
    config.addinivalue_line('markers', "background(kind, *args, first=False): the test checks a long run that "
                            "tests/background.py starts with the session (kind 'notebook', 'mlpipe', 'site' or "
                            "'probe')")


def pytest_collection_modifyitems(items):
    "Tests that wait for a background run go last (a test of the docs site waits for it): the others run meanwhile."
    for item in items:
        if 'site' in item.fixturenames: item.add_marker(pytest.mark.background('site'))
    items.sort(key=lambda item: item.get_closest_marker('background') is not None)


class Background:
    "The long runs of tests/background.py, one process beside the tests; `result(kind, *args)` waits for one."
    def __init__(self, jobs: list, out: Path):
        self.jobs, self.out, self.log = jobs, out, out/'runner.log'
        command = [sys.executable, str(ROOT/'tests'/'background.py'), str(out), json.dumps(jobs)]
        with open(self.log, 'w') as log:  # the runner's own output (a kernel's start-up lines), shown on a failure
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def result(self, *job) -> dict:
        if list(job) not in self.jobs: raise LookupError(f"no background run {list(job)}: mark the test that waits for "
                                                         f"it with @pytest.mark.background{job}")
        path = self.out/f'{self.jobs.index(list(job))}.json'
        while not path.exists():
            if self.proc.poll() is not None and not path.exists():
                raise RuntimeError(f'tests/background.py ended (exit {self.proc.returncode}) without a result for '
                                   f'{list(job)}:\n{self.log.read_text()[-3000:]}')
            time.sleep(0.1)
        return json.loads(path.read_text())

    def stop(self):
        "End the runner and whatever it started (kernels, commands), if it is still running."
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope='session', autouse=True)
def background(request, data_cache, tmp_path_factory) -> Background:
    "The runs that the selected tests' `background` marks ask for, started now, the `first` ones first."
    marks = [m for item in request.session.items for m in item.iter_markers('background')]
    jobs = [list(m.args) for m in sorted(marks, key=lambda m: not m.kwargs.get('first'))]
    jobs = [job for i, job in enumerate(jobs) if job not in jobs[:i]]
    if not jobs:
        yield None
        return
    runner = Background(jobs, tmp_path_factory.mktemp('background'))
    yield runner
    runner.stop()


@pytest.fixture(scope='session')
def site(background):
    "nbdev_proc_nbs on a copy of the project and its pages as HTML (scripts/render_site.py), built in the background."
    built = background.result('site')
    if built.get('error'): raise RuntimeError(built['error'])
    project = Path(built['project'])
    return SimpleNamespace(project=project, proc=project/'_proc', html=Path(built['html']), manifest=built['manifest'],
                           log=built['log'])


def write_cifar10(root: Path, n_per_batch=20, n_test=30, seed=0) -> dict:
    """Write a small CIFAR-10 archive in the real python format (cifar-10-batches-py: five data batches,
    a test batch and batches.meta) under `root`; return {file name: md5} for torchvision's check table."""
    folder = root/'cifar-10-batches-py'
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    def batch(n, label):
        return {'batch_label': label, 'labels': g.integers(0, 10, n).tolist(),
                'data': g.integers(0, 256, (n, 3072), dtype=np.uint8), 'filenames': [f'{i}.png' for i in range(n)]}
    files = {f'data_batch_{i}': batch(n_per_batch, f'training batch {i} of 5') for i in range(1, 6)}
    files['test_batch'] = batch(n_test, 'testing batch 1 of 1')
    files['batches.meta'] = {'label_names': CIFAR_CLASSES, 'num_cases_per_batch': n_per_batch, 'num_vis': 3072}
    md5 = {}
    for name, obj in files.items():
        data = pickle.dumps(obj)
        (folder/name).write_bytes(data)
        md5[name] = hashlib.md5(data).hexdigest()
    return md5


@pytest.fixture
def cifar_md5(monkeypatch):
    "Point torchvision's CIFAR-10 MD5 table at the files `write_cifar10` made (the check itself still runs)."
    from torchvision import datasets
    def use(md5: dict):
        train_list = [[f'data_batch_{i}', md5[f'data_batch_{i}']] for i in range(1, 6)]
        monkeypatch.setattr(datasets.CIFAR10, 'train_list', train_list)
        monkeypatch.setattr(datasets.CIFAR10, 'test_list', [['test_batch', md5['test_batch']]])
        meta = {'filename': 'batches.meta', 'key': 'label_names', 'md5': md5['batches.meta']}
        monkeypatch.setattr(datasets.CIFAR10, 'meta', meta)
    return use
