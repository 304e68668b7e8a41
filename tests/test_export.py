"""Each export format written, loaded back by its own runtime and compared with the checkpoint; an extra that is
missing named in the error; bad requests that write nothing."""
import sys

import pytest
import torch

from mlpipe.checkpoint import CheckpointError, save_checkpoint
from mlpipe.predict import MissingExtraError, predict
from mlpipe.export import (ExportError, ExportUsageError, ImageClassifier, export_lines, export_model, load_program,
                           load_safetensors)
from mlpipe.model import create_model

DATA = {'dataset': 'toy', 'classes': ['a', 'b', 'c'], 'channels': 3, 'size': [12, 10],
        'stats': {'mean': [0.4, 0.5, 0.6], 'std': [0.2, 0.25, 0.3]}}


@pytest.fixture
def checkpoint(tmp_path):
    "A small CNN's checkpoint, as the Trainer writes one (the entries export and predict read)."
    torch.manual_seed(0)
    model = create_model('cnn', in_channels=3, num_classes=3, widths=(4, 8))
    with torch.no_grad():
        for m in model.modules():  # BatchNorm with statistics of its own, as after training
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    state = {'model': model.state_dict(), 'model_config': model.config, 'data': DATA, 'history': [], 'config': {},
             'mlpipe_version': '0.1.0'}
    return save_checkpoint(state, tmp_path/'best.pt')


def images(n=9):
    return torch.randint(0, 256, (n, 3, 12, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def reference(checkpoint, x):
    "The checkpoint's own probabilities, through predict."
    return torch.tensor([[p.probabilities[c] for c in DATA['classes']] for p in predict(checkpoint, x)])


def test_onnx_export_loads_in_onnxruntime_and_predicts(checkpoint, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    result = export_model(checkpoint, 'onnx', tmp_path/'model.onnx')
    assert (result.format, result.images, result.n_images, result.same_top1) == ('onnx', 'random images', 64, 64)
    assert result.max_difference <= 1e-4
    session = ort.InferenceSession(str(tmp_path/'model.onnx'), providers=['CPUExecutionProvider'])
    for n in (1, 9):  # any batch size, raw uint8 pixels in
        out = torch.from_numpy(session.run(None, {'images': images(n).numpy()})[0])
        assert torch.allclose(out, reference(checkpoint, images(n)), atol=1e-4)
    from_onnx = predict(tmp_path/'model.onnx', images())
    assert [p.label for p in from_onnx] == [p.label for p in predict(checkpoint, images())]
    lines = export_lines(result)
    assert lines[0].startswith(f"wrote {tmp_path/'model.onnx'} (") and 'same top-1 class for 64/64' in lines[1]
    assert repr(result) == '\n'.join(lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['best.pt', 'model.onnx']  # no scratch folder left


def test_program_export_loads_with_torch_export(checkpoint, tmp_path):
    result = export_model(checkpoint, 'torchscript', tmp_path/'model.pt2', images=images())
    assert (result.images, result.n_images, result.same_top1) == ('given images', 9, 9)
    program, info = load_program(tmp_path/'model.pt2')
    assert torch.allclose(program(images(5)), reference(checkpoint, images(5)), atol=1e-5)
    assert info['classes'] == DATA['classes'] and info['model']['name'] == 'cnn'


def test_safetensors_export_rebuilds_a_fresh_model(checkpoint, tmp_path):
    pytest.importorskip('safetensors')
    result = export_model(checkpoint, 'safetensors', tmp_path/'w.safetensors')
    assert result.files == [tmp_path/'w.safetensors', tmp_path/'w.json']
    model, info = load_safetensors(tmp_path/'w.safetensors')
    assert isinstance(model, ImageClassifier)
    assert torch.allclose(model(images()), reference(checkpoint, images()), atol=1e-5)
    assert {k: info[k] for k in DATA} == DATA


def test_bad_requests_write_nothing(checkpoint, tmp_path):
    (tmp_path/'taken.onnx').write_text('mine')
    for fmt, out, message in (('tflite', 'm.tflite', 'Unknown export format'),
                              ('onnx', 'taken.onnx', 'never replaces'),
                              ('torchscript', 'm.onnx', 'name the output'),
                              ('torchscript', 'no/m.pt2', 'not a folder')):
        with pytest.raises(ExportUsageError, match=message): export_model(checkpoint, fmt, tmp_path/out)
    (tmp_path/'notes.pt').write_text('hello')
    with pytest.raises(CheckpointError): export_model(tmp_path/'notes.pt', 'torchscript', tmp_path/'m.pt2')
    torch.save({'weights': torch.zeros(2)}, tmp_path/'foreign.pt')
    with pytest.raises(CheckpointError, match='not an mlpipe checkpoint'):
        export_model(tmp_path/'foreign.pt', 'torchscript', tmp_path/'m.pt2')
    assert (tmp_path/'taken.onnx').read_text() == 'mine'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['best.pt', 'foreign.pt', 'notes.pt', 'taken.onnx']
    assert issubclass(ExportError, RuntimeError) and issubclass(ExportUsageError, ValueError)


@pytest.mark.parametrize('fmt, module', [('onnx', 'onnxruntime'), ('onnx', 'onnxscript'),
                                         ('safetensors', 'safetensors')])
def test_missing_extra_says_what_to_install(checkpoint, tmp_path, monkeypatch, fmt, module):
    out = tmp_path/f'model.{"onnx" if fmt == "onnx" else "safetensors"}'
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed: importing it fails
    with pytest.raises(MissingExtraError) as e: export_model(checkpoint, fmt, out)
    assert str(e.value).endswith('pip install "mlpipe[export]"') and module in str(e.value), str(e.value)
    assert not out.exists()
    assert issubclass(MissingExtraError, ImportError)
