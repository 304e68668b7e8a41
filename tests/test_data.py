"""Data stage checks that need real files on disk: CIFAR-10 in its real format, Debian's Fashion-MNIST."""
import pickle
from pathlib import Path

import pytest
import torch

from mlpipe.data import DEBIAN_FASHION_MNIST, DataError, as_tensors, compute_stats, get_dataset, get_dls
from conftest import CIFAR_CLASSES, write_cifar10


def test_cifar10_real_format_loads_through_torchvision(tmp_path, cifar_md5):
    cifar_md5(write_cifar10(tmp_path))
    train = get_dataset('cifar10', root=tmp_path, download=False)
    test = get_dataset('cifar10', root=tmp_path, train=False, download=False)
    assert (len(train), len(test)) == (100, 30)
    assert train.classes == CIFAR_CLASSES
    dls = get_dls('cifar10', root=tmp_path, batch_size=16, valid_pct=0.2, device='cpu', download=False)
    assert (dls.channels, dls.size, dls.num_classes) == (3, (32, 32), 10)
    x, y = next(iter(dls.train))
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.int64
    # the batches hold the pickled pixels: CIFAR's rows are channel-major 3x32x32
    raw = pickle.loads((tmp_path/'cifar-10-batches-py'/'data_batch_1').read_bytes())['data'][0]
    assert torch.equal(as_tensors(train)[0][0].flatten(), torch.as_tensor(raw))


def test_cifar10_md5_check_is_never_skipped(tmp_path):
    # the files are well-formed pickles, but not the official ones: torchvision's real table rejects them
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match="failed torchvision's MD5 check"):
        get_dataset('cifar10', root=tmp_path, download=False)


def test_cifar10_tampered_file_is_refused(tmp_path, cifar_md5):
    cifar_md5(write_cifar10(tmp_path))
    (tmp_path/'cifar-10-batches-py'/'data_batch_3').write_bytes(b'\x80\x04 not what was checked')
    with pytest.raises(DataError, match='cifar-10-batches-py failed'):
        get_dataset('cifar10', root=tmp_path)


def test_cifar10_missing_and_offline_says_how_to_get_it(tmp_path, monkeypatch):
    from torchvision import datasets
    def offline(self): raise OSError('network is unreachable')
    monkeypatch.setattr(datasets.CIFAR10, 'download', offline)
    with pytest.raises(DataError, match='could not be downloaded .*Connect to the internet'):
        get_dataset('cifar10', root=tmp_path)


def test_fashion_mnist_missing_and_offline(tmp_path, monkeypatch):
    import mlpipe.data
    from torchvision import datasets
    monkeypatch.setattr(mlpipe.data, 'DEBIAN_FASHION_MNIST', tmp_path/'not-installed')
    def offline(self): raise RuntimeError('Error downloading train-images-idx3-ubyte.gz')
    monkeypatch.setattr(datasets.FashionMNIST, 'download', offline)
    with pytest.raises(DataError, match='apt-get install dataset-fashion-mnist'):
        get_dataset('fashion_mnist', root=tmp_path)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")
def test_fashion_mnist_from_debian_offline(tmp_path):
    train = get_dataset('fashion_mnist', root=tmp_path, download=False)
    test = get_dataset('fashion_mnist', root=tmp_path, train=False, download=False)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.targets.bincount().tolist() == [6000] * 10 and test.targets.bincount().tolist() == [1000] * 10
    stats = compute_stats(as_tensors(train)[0])
    assert stats['mean'][0] == pytest.approx(0.2860, abs=1e-4) and stats['std'][0] == pytest.approx(0.3530, abs=1e-4)


def test_sample_is_checked_against_its_checksums(tmp_path, monkeypatch):
    import shutil, mlpipe.data
    damaged = tmp_path/'assets'
    shutil.copytree(mlpipe.data.SAMPLE_DIR, damaged)
    data = bytearray((damaged/'t10k-labels-idx1-ubyte.gz').read_bytes()); data[-9] ^= 1
    (damaged/'t10k-labels-idx1-ubyte.gz').write_bytes(bytes(data))
    monkeypatch.setattr(mlpipe.data, 'SAMPLE_DIR', damaged)
    with pytest.raises(DataError, match='does not match its SHA-256 sum'):
        get_dataset('fashion_mnist_sample', root=tmp_path/'cache')


def test_sample_is_inside_the_package():
    import mlpipe.data
    names = {p.name for p in mlpipe.data.SAMPLE_DIR.iterdir()}
    assert {'train-images-idx3-ubyte.gz', 't10k-images-idx3-ubyte.gz', 'LICENSE', 'SHA256SUMS'} <= names
    assert 'MIT License' in (mlpipe.data.SAMPLE_DIR/'LICENSE').read_text()
