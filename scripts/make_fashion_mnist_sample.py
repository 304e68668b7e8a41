#!/usr/bin/env python
"""Make mlpipe's bundled `fashion_mnist_sample` from the official Fashion-MNIST files.

A stratified, seeded sample: PER_CLASS_TRAIN training and PER_CLASS_TEST test images of each of the ten
classes, written in the dataset's own idx format (gzip-compressed) so torchvision's `FashionMNIST` class
reads it unchanged, with the dataset's MIT licence and a SHA-256 checksum of every file.

Usage: python scripts/make_fashion_mnist_sample.py [SOURCE_DIR] [--out mlpipe/assets/fashion_mnist_sample]
SOURCE_DIR holds the four official files (.gz or decompressed); it defaults to Debian's copy
(`apt-get install dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist).
"""
import argparse, gzip, hashlib, struct
from pathlib import Path
import numpy as np

PER_CLASS_TRAIN, PER_CLASS_TEST, SEED = 1000, 200, 0
FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
         'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
LICENSE = """Fashion-MNIST sample bundled with mlpipe
========================================

The files in this folder are a stratified sample ({train} training and {test} test images of each class,
seed {seed}) of Fashion-MNIST by Zalando Research, https://github.com/zalandoresearch/fashion-mnist,
made by mlpipe's scripts/make_fashion_mnist_sample.py from the official files, in their idx format.

Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms. arXiv:1708.07747, 2017.

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

def read_idx(path: Path) -> np.ndarray:
    "Read an idx file (gzip-compressed or not) into a numpy array."
    raw = path.read_bytes()
    if raw[:2] == b'\x1f\x8b': raw = gzip.decompress(raw)
    ndim = raw[3]
    shape = struct.unpack(f'>{ndim}I', raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)

def idx_bytes(a: np.ndarray) -> bytes:
    "Encode a uint8 array in the idx format."
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f'>{a.ndim}I', *a.shape) + a.astype(np.uint8).tobytes()

def find(src: Path, name: str) -> Path:
    for p in (src / name, src / f'{name}.gz'):
        if p.exists(): return p
    raise SystemExit(f"{name}(.gz) not found in {src}: pass the folder that holds the official Fashion-MNIST files")

def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    "Indices of `per_class` random samples of each class, in their original order."
    idx = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(idx))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('source', nargs='?', default='/usr/share/datasets/fashion-mnist')
    ap.add_argument('--out', default=str(Path(__file__).resolve().parents[1] / 'mlpipe/assets/fashion_mnist_sample'))
    args = ap.parse_args()
    src, out = Path(args.source), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    sums = []
    for split, per_class in (('train', PER_CLASS_TRAIN), ('test', PER_CLASS_TEST)):
        img_name, lbl_name = FILES[split]
        images, labels = read_idx(find(src, img_name)), read_idx(find(src, lbl_name))
        keep = stratified(labels, per_class, rng)
        for name, arr in ((img_name, images[keep]), (lbl_name, labels[keep])):
            # mtime=0 keeps the archive byte-identical from run to run, so the checksum is stable
            data = gzip.compress(idx_bytes(arr), compresslevel=9, mtime=0)
            (out / f'{name}.gz').write_bytes(data)
            sums.append(f'{hashlib.sha256(data).hexdigest()}  {name}.gz')
        print(f'{split}: {len(keep)} images, {np.bincount(labels[keep]).tolist()} per class')
    (out / 'SHA256SUMS').write_text('\n'.join(sums) + '\n')
    (out / 'LICENSE').write_text(LICENSE.format(train=PER_CLASS_TRAIN, test=PER_CLASS_TEST, seed=SEED))
    print(f'wrote {out}')

if __name__ == '__main__': main()
