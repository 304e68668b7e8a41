"""Evaluation checks that need files on disk or a fresh process: the run report read back by independent code,
predict on image files of other sizes and modes, and the library working without pandas."""
import csv, json, os, subprocess, sys
from fractions import Fraction

import pytest
import torch
from PIL import Image
from torch import nn

from mlpipe.eval import evaluate
from mlpipe.predict import predict
from mlpipe.report import write_report


def identity_batches(logits, labels, bs=7):
    "A loader for nn.Identity(): the logits are the inputs."
    return [(logits[i:i + bs], labels[i:i + bs]) for i in range(0, len(labels), bs)]


def recompute(rows, n_classes):
    "Every score metrics.json holds, from (target, prediction) pairs alone, in exact arithmetic."
    n = len(rows)
    def share(num, den): return Fraction(num, den) if den else Fraction(0)
    per = {'precision': [], 'recall': [], 'f1': [], 'support': []}
    for c in range(n_classes):
        tp = sum(1 for t, p in rows if t == c and p == c)
        fp = sum(1 for t, p in rows if t != c and p == c)
        fn = sum(1 for t, p in rows if t == c and p != c)
        per['precision'].append(share(tp, tp + fp))
        per['recall'].append(share(tp, tp + fn))
        per['f1'].append(share(2 * tp, 2 * tp + fp + fn))
        per['support'].append(tp + fn)
    present = [c for c in range(n_classes) if per['support'][c] or any(p == c for _, p in rows)]
    out = {'n_samples': n, 'accuracy': float(share(sum(t == p for t, p in rows), n))}
    for k in ('precision', 'recall', 'f1'):
        out[k] = float(sum(per[k][c] for c in present) / len(present))
        out[f'{k}_weighted'] = float(sum(v * s for v, s in zip(per[k], per['support'])) / n)
        out[f'per_class_{k}'] = [float(v) for v in per[k]]
    return out


@pytest.mark.parametrize('seed', range(6))
def test_metrics_json_is_what_predictions_csv_implies(tmp_path, seed):
    g = torch.Generator().manual_seed(seed)
    n_classes = int(torch.randint(2, 13, (1,), generator=g))
    n = int(torch.randint(1, 120, (1,), generator=g))
    labels = torch.randint(0, n_classes, (n,), generator=g)
    logits = torch.randn(n, n_classes, generator=g)
    logits[:, 0] -= 100  # class 0 is never predicted: its precision is 0 by the zero-division rule
    names = [f'class, {c} | "quoted"' for c in range(n_classes)]  # commas, pipes and quotes in names
    result = evaluate(nn.Identity(), identity_batches(logits, labels), classes=names)
    write_report(result, tmp_path)

    saved = json.loads((tmp_path/'metrics.json').read_text())
    with open(tmp_path/'predictions.csv', newline='') as f: table = list(csv.DictReader(f))
    assert list(table[0]) == ['index', 'target', 'target_name', 'prediction', 'prediction_name', 'confidence']
    assert [r['target_name'] for r in table] == [names[t] for t in labels.tolist()]
    assert [int(r['index']) for r in table] == list(range(n))
    assert [int(r['target']) for r in table] == labels.tolist()
    rows = [(int(r['target']), int(r['prediction'])) for r in table]
    expected = recompute(rows, n_classes)
    for k in ('n_samples', 'accuracy', 'precision', 'recall', 'f1',
              'precision_weighted', 'recall_weighted', 'f1_weighted'):
        assert saved[k] == expected[k], k  # equal to the last digit, not merely close
    for k in ('precision', 'recall', 'f1'): assert saved['per_class'][k] == expected[f'per_class_{k}']
    assert saved['per_class']['precision'][0] == 0.0
    assert saved['per_class']['class'] == names
    probs = logits.softmax(1)
    assert [float(r['confidence']) for r in table] == probs.max(1).values.tolist()
    assert ('top5_accuracy' in saved) == (n_classes >= 5)
    assert (tmp_path/'report.md').read_text().count('| class, ') == n_classes


class Recorder(nn.Module):
    "A 3-class model that remembers the inputs it was given."
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 3)
        self.seen = None
    def forward(self, x):
        self.seen = x
        return self.linear(x.mean((1, 2, 3))[:, None])


def test_predict_prepares_files_like_training(tmp_path):
    stats = {'mean': [0.5, 0.25, 0.75], 'std': [0.5, 0.25, 0.25]}
    data = {'classes': ['a', 'b', 'c'], 'channels': 3, 'size': [20, 30], 'stats': stats}  # height 20, width 30
    Image.new('L', (60, 40), 128).save(tmp_path/'grey.png')  # greyscale, twice the size
    Image.new('RGB', (30, 20), (255, 0, 51)).save(tmp_path/'rgb.jpg', quality=100)
    model = Recorder()
    preds = predict(model, [tmp_path/'grey.png', str(tmp_path/'rgb.jpg')], data)
    assert model.seen.shape == (2, 3, 20, 30)
    def normalised(pixel): return (torch.tensor(pixel) - torch.tensor(stats['mean'])) / torch.tensor(stats['std'])
    assert torch.allclose(model.seen[0, :, 5, 5], normalised([128 / 255] * 3), atol=1e-3)
    assert torch.allclose(model.seen[1, :, 5, 5], normalised([1, 0, 0.2]), atol=0.02)
    assert [p.label for p in preds] == [data['classes'][p.index] for p in preds]
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in preds)
    assert model.training  # predict leaves the model's mode as it found it


def test_predict_from_checkpoint_and_its_errors(tmp_path):
    from mlpipe.model import create_model
    from mlpipe.checkpoint import CheckpointError, save_checkpoint
    model = create_model('mlp', in_channels=1, num_classes=4, size=8, hidden=(5,))
    data = {'dataset': 'toy', 'classes': list('wxyz'), 'channels': 1, 'size': [8, 8],
            'stats': {'mean': [0.3], 'std': [0.2]}}
    path = tmp_path/'best.pt'
    # the entries predict reads, as Trainer.state_dict() writes them
    save_checkpoint({'model': model.state_dict(), 'model_config': model.config, 'data': data, 'history': [],
                     'config': {}, 'mlpipe_version': '0.1.0'}, path)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    direct = predict(model, images, data)
    from_file = predict(path, images)
    assert [p.index for p in from_file] == [p.index for p in direct]
    assert [p.probability for p in from_file] == pytest.approx([p.probability for p in direct], abs=1e-6)
    with pytest.raises(CheckpointError): predict(tmp_path/'nowhere.pt', images)
    (tmp_path/'notes.txt').write_text('hello')
    with pytest.raises(CheckpointError): predict(tmp_path/'notes.txt', images)


def test_library_needs_no_pandas(tmp_path):
    # pandas is a dev extra only: evaluation and its report must work where it is not installed
    code = f"""
import sys; sys.modules['pandas'] = None  # any import of pandas now fails
import torch
from torch import nn
from mlpipe.eval import evaluate, classification_report
from mlpipe.report import write_report
labels = torch.arange(12) % 3
result = evaluate(nn.Identity(), [(torch.randn(12, 3), labels)])
classification_report(result)
write_report(result, {str(tmp_path)!r}, history=[{{'epoch': 0, 'train_loss': 1.0, 'valid_loss': 1.1}}])
"""
    subprocess.run([sys.executable, '-c', code], check=True, env={**os.environ, 'MPLBACKEND': 'Agg'}, timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['confusion_matrix.png', 'history.png', 'metrics.json',
                                                          'predictions.csv', 'report.md']


def test_iter_predictions_reports_each_bad_file_and_predicts_the_rest(tmp_path):
    from mlpipe.data import DataError
    from mlpipe.predict import Prediction, iter_predictions
    data = {'classes': ['a', 'b', 'c'], 'channels': 3, 'size': [20, 30],
            'stats': {'mean': [0.5] * 3, 'std': [0.25] * 3}}
    for name in ('one.png', 'two.png'): Image.new('RGB', (30, 20), (200, 10, 10)).save(tmp_path/name)
    (tmp_path/'cut.png').write_bytes((tmp_path/'one.png').read_bytes()[:40])  # a truncated file
    files = [tmp_path/'one.png', tmp_path/'cut.png', tmp_path/'missing.png', tmp_path/'two.png']
    answers = list(iter_predictions(Recorder(), files, data, batch_size=3))
    assert [f for f, _ in answers] == files
    assert [type(a) for _, a in answers] == [Prediction, DataError, DataError, Prediction]
    assert 'cut.png' in str(answers[1][1]) and 'missing.png' in str(answers[2][1])
    with pytest.raises(DataError, match='cut.png'): predict(Recorder(), files, data)


def test_load_model_refuses_absurd_sizes_before_building(tmp_path):
    import time
    from mlpipe.predict import load_model
    from mlpipe.model import create_model
    from mlpipe.checkpoint import CheckpointError, save_checkpoint
    model = create_model('cnn', in_channels=1, num_classes=2, widths=(4,))
    data = {'dataset': 'toy', 'classes': ['x', 'y'], 'channels': 1, 'size': [8, 8],
            'stats': {'mean': [0.3], 'std': [0.2]}}
    state = {'model': model.state_dict(), 'model_config': model.config, 'data': data, 'mlpipe_version': '0.1.0'}
    for changes, message in (({'model_config': {**model.config, 'widths': [2**40]}}, 'larger than the'),
                             ({'data': {**data, 'size': [2**20, 2**20]}}, 'not \\[height, width\\]'),
                             ({'data': {**data, 'stats': {'mean': [0.3], 'std': [0]}}}, 'must be above 0')):
        path = save_checkpoint({**state, **changes}, tmp_path/'bad.pt')
        started = time.perf_counter()
        with pytest.raises(CheckpointError, match=message): load_model(path)
        assert time.perf_counter() - started < 5
