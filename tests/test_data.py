"""Data stage checks that need real files on disk: CIFAR-10 in its real format, Debian's Fashion-MNIST."""
import gzip, os, pickle, shutil, threading, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlpipe.data import DEBIAN_FASHION_MNIST, DataError, as_tensors, compute_stats, get_dataset, load_image
from mlpipe.loaders import get_dls
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


needs_debian = pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(),
                                  reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")


@needs_debian
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
    data = bytearray((damaged/'t10k-labels-idx1-ubyte.gz').read_bytes())
    data[-9] ^= 1
    (damaged/'t10k-labels-idx1-ubyte.gz').write_bytes(bytes(data))
    monkeypatch.setattr(mlpipe.data, 'SAMPLE_DIR', damaged)
    with pytest.raises(DataError, match='does not match its SHA-256 sum'):
        get_dataset('fashion_mnist_sample', root=tmp_path/'cache')


def test_sample_is_inside_the_package():
    import mlpipe.data
    names = {p.name for p in mlpipe.data.SAMPLE_DIR.iterdir()}
    assert {'train-images-idx3-ubyte.gz', 't10k-images-idx3-ubyte.gz', 'LICENSE', 'SHA256SUMS'} <= names
    assert 'MIT License' in (mlpipe.data.SAMPLE_DIR/'LICENSE').read_text()


# Data checked before training (issue 12): every fault below reproduced first, then fixed at its cause.

def image_folder(root: Path, classes: dict, n: int = 3, size=(8, 8)) -> Path:
    "Write random RGB PNGs: `classes` maps each split to its class folders."
    g = np.random.default_rng(0)
    for split, names in classes.items():
        for name in names:
            (root/split/name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(g.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root/split/name/f'{i}.png')
    return root


def one_line(e) -> str:
    text = str(e.value)
    assert '\n' not in text, text
    return text


@pytest.mark.parametrize('test_classes, words', [(('a', 'c'), 'only in train: b; only in test: c'),
                                                  (('a', 'b', 'c'), 'only in test: c')])
def test_train_and_test_class_folders_that_differ_are_refused(tmp_path, test_classes, words):
    root = image_folder(tmp_path, {'train': ('a', 'b'), 'test': test_classes})
    for call in (lambda: get_dls(f'folder:{root}', batch_size=2, device='cpu'),
                 lambda: get_dataset(f'folder:{root}'), lambda: get_dataset(f'folder:{root}', train=False)):
        with pytest.raises(DataError) as e: call()
        assert words in one_line(e) and str(root/'train') in str(e.value), str(e.value)


def test_a_folder_dataset_with_one_class_is_refused_up_front(tmp_path):
    root = image_folder(tmp_path, {'train': ('a',), 'test': ('a',)})
    with pytest.raises(DataError) as e: get_dls(f'folder:{root}', batch_size=2, device='cpu')
    text = one_line(e)
    assert 'only one class folder (a)' in text and 'at least two' in text and '=' not in text, text


def test_a_symlink_loop_in_a_class_folder_does_not_multiply_the_data(tmp_path):
    root = image_folder(tmp_path, {'train': ('a', 'b'), 'test': ('a', 'b')})
    os.symlink('.', root/'train'/'a'/'loop')
    os.symlink('..', root/'test'/'b'/'up')  # a link to the split: its other class must not be counted as b
    train, test = get_dataset(f'folder:{root}'), get_dataset(f'folder:{root}', train=False)
    assert (len(train), len(test)) == (6, 6)
    assert sorted(Path(p).name for p, _ in train.samples) == ['0.png', '0.png', '1.png', '1.png', '2.png', '2.png']


def test_a_symlinked_class_folder_is_still_read(tmp_path):
    root = image_folder(tmp_path/'data', {'train': ('a', 'b'), 'test': ('a', 'b')})
    shutil.move(root/'train'/'b', tmp_path/'elsewhere')
    os.symlink(tmp_path/'elsewhere', root/'train'/'b')
    assert len(get_dataset(f'folder:{root}')) == 6


def in_thread(call, seconds=20):
    "Run `call` in a daemon thread; fail if it is still running after `seconds` (a hang)."
    box = {}
    def target():
        try: box['value'] = call()
        except BaseException as e: box['error'] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f'still running after {seconds}s'
    return box


def test_a_fifo_named_png_is_refused_not_waited_on(tmp_path):
    root = image_folder(tmp_path, {'train': ('a', 'b'), 'test': ('a', 'b')})
    os.mkfifo(root/'train'/'a'/'pipe.png')
    pipe = root/'train'/'a'/'pipe.png'
    for call in (lambda: get_dls(f'folder:{root}', batch_size=2, device='cpu'), lambda: load_image(pipe)):
        error = in_thread(call).get('error')
        assert isinstance(error, DataError), repr(error)
        assert str(root/'train'/'a'/'pipe.png') in str(error) and 'not a regular file' in str(error), str(error)


def test_a_decompression_bomb_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    bomb = tmp_path/'bomb.png'
    Image.new('1', (20_000, 10_000)).save(bomb)  # 200 Mpixel in a few KB: beyond PIL's hard limit
    assert bomb.stat().st_size < 100_000
    with pytest.raises(DataError) as e: load_image(bomb)
    assert str(bomb) in one_line(e) and '200000000 pixels' in str(e.value), str(e.value)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 40)  # 8x8 = 64 pixels: over the limit, under twice it: a warning
    root = image_folder(tmp_path/'data', {'train': ('a', 'b'), 'test': ('a', 'b')})
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # PIL's warning must become our error, not leak out as a warning
        with pytest.raises(DataError) as e: get_dls(f'folder:{root}', batch_size=2, device='cpu')
    assert '0.png' in one_line(e) and 'exceeds limit of 40 pixels' in str(e.value), str(e.value)


def damage(path: Path, how: str):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if how == 'truncated' else b'\x12\x34' + data[2:])


@pytest.mark.parametrize('how', ['truncated', 'bad header'])
def test_a_damaged_sample_cache_is_unpacked_again(tmp_path, how):
    assert len(get_dataset('fashion_mnist_sample', root=tmp_path, train=False)) == 2000
    raw = tmp_path/'fashion_mnist_sample'/'FashionMNIST'/'raw'
    damage(raw/'t10k-images-idx3-ubyte', how)
    damage(raw/'train-labels-idx1-ubyte', how)
    test = get_dataset('fashion_mnist_sample', root=tmp_path, train=False)
    train = get_dataset('fashion_mnist_sample', root=tmp_path)
    assert (len(train), len(test), test.data.shape) == (10_000, 2000, (2000, 28, 28))


@pytest.mark.parametrize('how', ['truncated', 'bad header'])
def test_a_damaged_cache_with_no_source_names_the_file(tmp_path, monkeypatch, how):
    import mlpipe.data
    from torchvision import datasets
    monkeypatch.setattr(mlpipe.data, 'DEBIAN_FASHION_MNIST', tmp_path/'not-installed')
    def offline(self): raise RuntimeError('offline')
    monkeypatch.setattr(datasets.MNIST, 'download', offline)  # FashionMNIST's too
    for name, folder in (('mnist', 'MNIST'), ('fashion_mnist', 'FashionMNIST')):
        get_dataset('fashion_mnist_sample', root=tmp_path)  # real idx files to copy
        raw = tmp_path/folder/'raw'
        shutil.copytree(tmp_path/'fashion_mnist_sample'/'FashionMNIST'/'raw', raw)
        damage(raw/'train-images-idx3-ubyte', how)
        with pytest.raises(DataError) as e: get_dataset(name, root=tmp_path)
        text = one_line(e)
        assert str(raw/'train-images-idx3-ubyte') in text and 'delete it' in text, text


@needs_debian
def test_a_damaged_fashion_mnist_cache_is_unpacked_again_from_debians_copy(tmp_path, monkeypatch):
    from torchvision import datasets
    def offline(self): raise RuntimeError('offline')
    monkeypatch.setattr(datasets.MNIST, 'download', offline)
    raw = tmp_path/'FashionMNIST'/'raw'
    raw.mkdir(parents=True)
    for name in ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'):  # the small files; the large ones unpack fresh
        (raw/name).write_bytes(gzip.decompress((DEBIAN_FASHION_MNIST/f'{name}.gz').read_bytes()))
    damage(raw/'t10k-images-idx3-ubyte', 'truncated')
    assert len(get_dataset('fashion_mnist', root=tmp_path, train=False, download=False)) == 10_000


def test_fashion_mnist_never_says_install_debians_copy_when_it_is_installed(tmp_path, monkeypatch):
    import mlpipe.data
    from torchvision import datasets
    debian = tmp_path/'debian'
    debian.mkdir()
    for name in mlpipe.data.MNIST_FILES: (debian/f'{name}.gz').write_bytes(b'\x1f\x8b not gzip')  # a damaged package
    monkeypatch.setattr(mlpipe.data, 'DEBIAN_FASHION_MNIST', debian)
    def offline(self): raise RuntimeError('offline')
    monkeypatch.setattr(datasets.MNIST, 'download', offline)
    with pytest.raises(DataError) as e: get_dataset('fashion_mnist', root=tmp_path/'cache')
    text = one_line(e)
    assert str(debian) in text and 'apt-get install --reinstall dataset-fashion-mnist' in text, text


def test_the_torch_loader_names_a_corrupt_image_in_one_line(tmp_path):
    root = image_folder(tmp_path, {'train': ('a', 'b'), 'test': ('a', 'b')}, n=4)
    (root/'test'/'b'/'2.png').write_bytes(b'not an image')
    dls = get_dls(f'folder:{root}', batch_size=2, device='cpu', loader='torch', num_workers=1)
    with pytest.raises(DataError) as e: list(dls.test)
    text = one_line(e)
    assert text.startswith(f"{root/'test'/'b'/'2.png'} is not a readable image"), text
