"""The `mlpipe` command end to end: train, eval, predict, resume, the bad inputs and their exit statuses, and the
wheel's `mlpipe` with the sample inside it. Most commands run in-process through `mlpipe.cli.main(argv)` (the code of
the `mlpipe` script, with its own stdout, stderr, working folder and Python's default warning filters); what needs a
process of its own runs in one: the console script, a SIGKILL and a SIGTERM, two runs racing for one folder, the
installed wheel. Runs use a tiny MLP so that they take seconds; the default recipe has its own (slow) test, its run
started with the session in tests/background.py (conftest.py's `background`), beside the other tests."""
import contextlib, csv, io, json, os, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from mlpipe.cli import main

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ['best.pt', 'config.yaml', 'history.csv', 'last.pt', 'metrics.json', 'predictions.csv', 'report.md']
TINY = ['--model', 'mlp', '--epochs', '1', '--batch-size', '512']


def show_warning(message, category, filename, lineno, file=None, line=None):
    "Print a warning to stderr as a fresh `mlpipe` process does (pytest would otherwise collect it)."
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def mlpipe(*args, cwd=None) -> SimpleNamespace:
    """Run `mlpipe ARGS` in this process, in `cwd` if given, with Python's default warning filters; its exit status
    and what it wrote to stdout and stderr, as `subprocess.run` would give them."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if cwd is not None: stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(warnings.catch_warnings())
        warnings.resetwarnings()
        for action, category in [('ignore', DeprecationWarning), ('ignore', PendingDeprecationWarning),
                                 ('ignore', ImportWarning), ('ignore', ResourceWarning)]:
            warnings.simplefilter(action, category)  # python's defaults, as a fresh process has them
        warnings.showwarning = show_warning
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        status = main([str(a) for a in args])
    return SimpleNamespace(returncode=status, stdout=out.getvalue(), stderr=err.getvalue())


def mlpipe_process(*args, cwd=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    "Run `python -m mlpipe.cli ARGS` (the code of the `mlpipe` script) in a process of its own."
    return subprocess.run([sys.executable, '-m', 'mlpipe.cli', *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kw)


def snapshot(folder: Path) -> dict:
    "Every file of `folder` with its bytes and modification time, to show that nothing was touched."
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture(scope='module')
def tiny_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('config')/'tiny.yaml'
    path.write_text('model_args: {hidden: [64]}\n')
    return path


@pytest.fixture(scope='module')
def run(tmp_path_factory, tiny_yaml) -> Path:
    "A finished training run of a tiny MLP on the bundled sample."
    folder = tmp_path_factory.mktemp('runs')/'tiny'
    result = mlpipe('train', *TINY, '--config', tiny_yaml, '--out', folder)
    assert result.returncode == 0, result.stderr
    assert 'epoch 1/1' in result.stdout and 'test: accuracy' in result.stdout
    assert ', 1 epoch, ' in result.stdout  # not "1 epochs"
    return folder


def test_help_of_each_command():
    script = shutil.which('mlpipe')  # the installed console script, where there is one
    command = [script] if script else [sys.executable, '-m', 'mlpipe.cli']
    result = subprocess.run(command + ['--help'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and all(w in result.stdout for w in ['train', 'eval', 'predict']), result.stderr
    for args, expected in [([], ['train', 'eval', 'predict']), (['eval'], ['CHECKPOINT', '--dataset', '--out']),
                           (['predict'], ['CHECKPOINT', 'FILE']),
                           (['train'], ['--config', '--dataset', '--data-dir', '--model', '--epochs', '--batch-size',
                                        '--lr',
                                        '--seed', '--out', '--checkpoint-every', '--resume', '--debug'])]:
        result = mlpipe(*args, '--help')
        assert result.returncode == 0, result.stderr
        assert all(word in result.stdout for word in expected), result.stdout


def test_train_writes_the_run_folder(run):
    names = sorted(p.name for p in run.iterdir())
    assert set(RUN_FILES) <= set(names) and any(n.endswith('.png') for n in names), names
    metrics = json.loads((run/'metrics.json').read_text())
    assert {'accuracy', 'precision', 'recall', 'f1', 'n_samples'} <= set(metrics)
    assert metrics['n_samples'] == 2000 and 0.5 < metrics['accuracy'] <= 1
    rows = list(csv.reader(open(run/'predictions.csv')))
    assert rows[0] == ['index', 'target', 'target_name', 'prediction', 'prediction_name', 'confidence']
    assert len(rows) - 1 == metrics['n_samples']
    assert [int(r[0]) for r in rows[1:]] == list(range(2000))
    history = list(csv.DictReader(open(run/'history.csv')))
    assert [h['epoch'] for h in history] == ['1']
    config = (run/'config.yaml').read_text()
    assert 'model: mlp' in config and 'epochs: 1' in config and 'out:' not in config
    assert '](' in (run/'report.md').read_text()  # it shows its pictures


def test_eval_of_best_repeats_the_run_metrics(run, tmp_path):
    result = mlpipe('eval', run/'best.pt', '--dataset', 'fashion_mnist_sample', '--out', tmp_path/'eval')
    assert result.returncode == 0, result.stderr
    for name in ['metrics.json', 'predictions.csv']:
        assert (tmp_path/'eval'/name).read_text() == (run/name).read_text()
    assert (tmp_path/'eval'/'report.md').exists() and (tmp_path/'eval'/'config.yaml').exists()


def test_without_out_each_run_gets_a_new_folder_under_runs(run, tmp_path):
    for _ in range(2): assert mlpipe('eval', run/'best.pt', cwd=tmp_path).returncode == 0
    folders = sorted((tmp_path/'runs').iterdir())
    assert len(folders) == 2 and all((f/'metrics.json').exists() for f in folders)
    assert folders[0].name[:8].isdigit() and folders[0].name[8] == '-'  # YYYYmmdd-HHMMSS


def test_predict_prints_file_class_and_probability(run, tmp_path):
    from mlpipe.data import get_dataset
    test_ds = get_dataset('fashion_mnist_sample', train=False)
    files = []
    for i in range(5):
        test_ds[i][0].save(tmp_path/f'{i}.png')
        files.append(tmp_path/f'{i}.png')
    result = mlpipe('predict', run/'best.pt', *files)
    assert result.returncode == 0, result.stderr
    lines = [l.split('\t') for l in result.stdout.splitlines()]
    expected = [test_ds.classes[int(r['prediction'])] for r in list(csv.DictReader(open(run/'predictions.csv')))[:5]]
    assert [l[0] for l in lines] == [str(f) for f in files]
    assert [l[1] for l in lines] == expected  # a PNG of a test image gets the class evaluation gave it
    assert all(0 < float(l[2]) <= 1 and len(l[2]) == 5 for l in lines)


def test_killed_run_resumes_to_the_same_end(tmp_path, tiny_yaml):
    small_cnn = tiny_yaml.with_name('small_cnn.yaml')
    small_cnn.write_text('model_args: {widths: [8, 16]}\n')
    # the whitened CNN with SGD and the linear schedule: a fitted stem, momentum and a LambdaLR to restore
    args = ['--model', 'whitened_cnn', '--optimizer', 'sgd', '--schedule', 'linear', '--lr', '0.05', '--epochs', '2',
            '--batch-size', '256', '--config', small_cnn]
    whole = mlpipe('train', *args, '--out', tmp_path/'whole')
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path/'killed'
    proc = subprocess.Popen([sys.executable, '-m', 'mlpipe.cli', 'train', *map(str, args), '--checkpoint-every', '20',
                             '--out', str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (killed/'last.pt').exists() and proc.poll() is None and time.monotonic() < deadline: time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None: proc.kill()
    assert proc.returncode == -signal.SIGKILL, 'the run finished before it was killed'
    assert not (killed/'metrics.json').exists()
    resumed = mlpipe('train', '--out', killed, '--resume')
    assert resumed.returncode == 0, resumed.stderr
    assert 'resuming whitened_cnn' in resumed.stdout and 'lr 0.05 (sgd, linear schedule)' in resumed.stdout
    assert [r['epoch'] for r in csv.DictReader(open(killed/'history.csv'))] == ['1', '2']
    assert (killed/'metrics.json').read_text() == (tmp_path/'whole'/'metrics.json').read_text()
    # a finished run has nothing left to resume
    result = mlpipe('train', '--out', killed, '--resume')
    assert result.returncode == 1 and 'Nothing to resume' in result.stderr


def test_resume_finishes_a_run_whose_report_is_incomplete(run, tmp_path):
    copy = tmp_path/'copy'
    shutil.copytree(run, copy)
    for name in ('report.md', 'predictions.csv'): (copy/name).unlink()  # as if killed while the report was written
    result = mlpipe('train', '--out', copy, '--resume')
    assert result.returncode == 0, result.stderr
    assert (copy/'predictions.csv').read_text() == (run/'predictions.csv').read_text() and (copy/'report.md').exists()


def test_resume_starts_a_run_stopped_before_its_first_checkpoint(run, tmp_path):
    stopped = tmp_path/'stopped'
    stopped.mkdir()
    shutil.copy(run/'config.yaml', stopped)  # all a run leaves when it stops in its first seconds
    result = mlpipe('train', '--out', stopped, '--resume')
    assert result.returncode == 0, result.stderr
    assert (stopped/'metrics.json').read_text() == (run/'metrics.json').read_text()  # the same run, from the start


def test_two_runs_for_one_folder_one_wins(tmp_path, tiny_yaml):
    args = [sys.executable, '-m', 'mlpipe.cli', 'train', *TINY, '--config', str(tiny_yaml),
            '--out', str(tmp_path/'same')]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(status for status, _ in results) == [0, 1], results
    loser = next(err for status, err in results if status == 1)
    assert 'is in use by another mlpipe run' in loser or 'already holds a run' in loser, loser


def test_sigterm_stops_like_ctrl_c_and_says_how_to_resume(tmp_path, tiny_yaml):
    folder = tmp_path/'run'
    proc = subprocess.Popen([sys.executable, '-m', 'mlpipe.cli', 'train', *TINY, '--epochs', '50', '--config',
                             str(tiny_yaml), '--out', str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while not (folder/'config.yaml').exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None: proc.kill()
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == ("mlpipe: stopped by SIGTERM. Continue the run with: "
                                               f"mlpipe train --out {folder} --resume")


def test_predict_answers_every_good_file_and_reports_each_bad_one(run, tmp_path):
    from mlpipe.data import get_dataset
    get_dataset('fashion_mnist_sample', train=False)[0][0].save(tmp_path/'good.png')
    (tmp_path/'notes.txt').write_text('not an image')
    result = mlpipe('predict', run/'best.pt', tmp_path/'notes.txt', tmp_path/'good.png', tmp_path/'gone.png')
    assert result.returncode == 1
    assert [line.split('\t')[0] for line in result.stdout.splitlines()] == [str(tmp_path/'good.png')]
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and 'notes.txt is not a readable image' in errors[0], errors
    assert errors[1] == f"mlpipe: error: {tmp_path/'gone.png'}: no such file."


BAD_TRAIN = [  # (arguments, exit status, what the one line says)
    (['--dataset', 'imagenet'], 2, 'Choose one of: fashion_mnist_sample, fashion_mnist, mnist, cifar10, folder:PATH'),
    (['--model', 'vit'], 2, 'Choose one of: mlp, cnn, resnet, whitened_cnn'),
    (['--epochs', '0'], 2, '--epochs must be a whole number of at least 1'),
    (['--batch-size', '-5'], 2, '--batch-size must be a whole number of at least 1'),
    (['--lr', 'fast'], 2, '--lr must be a positive number'),
    (['--seed', '-1'], 2, '--seed must be a whole number'),
    (['--checkpoint-every', '0'], 2, '--checkpoint-every must be'),
    (['--prune', '1'], 2, '--prune must be a number from 0 to 1, 1 excluded'),
    (['--prune', '0.5', '--loader', 'torch'], 2, "prune skips rows of the in-memory loader's batches"),
    (['--tta-shifts', 'true', '--tta', 'false'], 2, "this run has no test-time flips (tta is off)"),
    (['--tta-shifts', 'true', '--augment', 'false'], 2, "this run has no test-time flips (augment is off)"),
    (['--tta-shifts', 'true', '--dataset', 'mnist'], 2, "(mnist is trained without flips)"),
    (['--optimizer', 'adam'], 2, "Unknown optimizer 'adam' (--optimizer). Choose one of: adamw, sgd."),
    (['--schedule', 'cosine'], 2, 'Choose one of: onecycle, linear, constant'),
    ([], 1, 'already holds a run'),
]

@pytest.mark.parametrize('args,status,message', BAD_TRAIN,
                         ids=[' '.join(a) or 'out-holds-a-run' for a, _, _ in BAD_TRAIN])
def test_bad_train_input_is_one_line_and_touches_nothing(run, args, status, message):
    before = snapshot(run)
    result = mlpipe('train', *TINY, *args, '--out', run)
    assert (result.returncode, result.stdout) == (status, ''), result.stderr
    assert result.stderr.startswith('mlpipe: error: ') and message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and 'Traceback' not in result.stderr
    assert snapshot(run) == before


def test_missing_data_fails_before_the_folder_exists(tmp_path):
    result = mlpipe('train', *TINY, '--dataset', f'folder:{tmp_path/"nothing"}', '--out', tmp_path/'new')
    assert result.returncode == 1 and 'is not a folder' in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path/'new').exists()


def test_bad_config_files(run, tmp_path):
    before = snapshot(run)
    (tmp_path/'broken.yaml').write_text('epochs: [1\n')
    (tmp_path/'typo.yaml').write_text('epochs: 1\nlearning_rate: 0.1\n')
    for config, message in [('broken.yaml', 'is not valid YAML at line 2'),
                            ('typo.yaml', "Unknown setting 'learning_rate'"),
                            ('missing.yaml', 'Cannot read the config file')]:
        result = mlpipe('train', '--config', tmp_path/config, '--out', run)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
    assert snapshot(run) == before


def test_resume_mistakes(run, tmp_path):
    before = snapshot(run)
    result = mlpipe('train', '--resume')
    assert result.returncode == 2 and '--resume continues the run in --out DIR' in result.stderr
    (tmp_path/'empty').mkdir()
    result = mlpipe('train', '--out', tmp_path/'empty', '--resume')
    assert result.returncode == 1 and 'Nothing to resume' in result.stderr and len(result.stderr.splitlines()) == 1
    assert list((tmp_path/'empty').iterdir()) == []
    shutil.copytree(run, tmp_path/'copy')
    (tmp_path/'copy'/'metrics.json').unlink()  # as if it had been stopped before the end
    result = mlpipe('train', '--out', tmp_path/'copy', '--resume', '--epochs', '2')
    assert result.returncode == 2 and 'its epochs is 1, not 2' in result.stderr, result.stderr
    assert snapshot(run) == before


def test_checkpoint_and_image_errors(run, tmp_path):
    (tmp_path/'notes.txt').write_text('not an image')
    (tmp_path/'fake.pt').write_text('not a checkpoint')
    pets = tmp_path/'pets'  # a folder dataset whose classes are not Fashion-MNIST's
    for name in ('cat', 'dog'):
        (pets/'test'/name).mkdir(parents=True)
        Image.new('L', (28, 28)).save(pets/'test'/name/'0.png')
    cases = [(['eval', tmp_path/'missing.pt', '--out', tmp_path/'e1'], 1, 'No checkpoint at'),
             (['eval', tmp_path/'fake.pt', '--out', tmp_path/'e2'], 1, 'is not a readable checkpoint'),
             (['eval', run/'best.pt', '--out', run], 1, 'already holds a run'),
             (['eval', run/'best.pt', '--dataset', f'folder:{pets}', '--out', tmp_path/'e3'], 2,
              'evaluate it on data with its classes'),
             (['predict', tmp_path/'missing.pt', tmp_path/'notes.txt'], 1, 'No checkpoint at'),
             (['predict', run/'best.pt', tmp_path/'notes.txt'], 1, 'notes.txt is not a readable image')]
    for args, status, message in cases:
        result = mlpipe(*args)
        assert result.returncode == status and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and 'Traceback' not in result.stderr, result.stderr
        assert result.stdout == '', result.stdout
    assert not any((tmp_path/f'e{i}').exists() for i in (1, 2, 3))


def test_usage_errors_and_debug(run, tmp_path):
    result = mlpipe('train', '--bogus')
    assert result.returncode == 2
    assert result.stderr.splitlines() == ['mlpipe train: error: unrecognized arguments: --bogus',
                                          "Run 'mlpipe train --help' to see the options."]
    assert mlpipe('fit').returncode == 2
    assert mlpipe('predict', run/'best.pt').returncode == 2  # no FILE
    result = mlpipe('eval', tmp_path/'missing.pt', '--debug')
    assert result.returncode == 1 and 'Traceback' in result.stderr and result.stderr.rstrip().endswith('no such file.')


def test_wheel_gives_a_working_mlpipe(tmp_path):
    "Build the wheel from a copy of the sources, install it elsewhere, and train from it on the sample it carries."
    src = tmp_path/'src'
    ignore = shutil.ignore_patterns('.git', 'nbs', '_docs', '_proc', 'runs', '*.egg-info', 'build', '__pycache__',
                                    '.venv', 'tests')
    shutil.copytree(ROOT, src, ignore=ignore)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
                    '-w', tmp_path/'dist', src],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path/'dist').glob('mlpipe-*.whl'))
    site = tmp_path/'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', site, wheel],
                   check=True, capture_output=True, timeout=300)
    assert (site/'mlpipe'/'assets'/'fashion_mnist_sample'/'train-images-idx3-ubyte.gz').exists()
    env = {**os.environ, 'PYTHONPATH': str(site), 'MLPIPE_DATA': str(tmp_path/'data')}
    where = subprocess.run([sys.executable, '-c', 'import mlpipe; print(mlpipe.__file__)'], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the source tree
    result = subprocess.run([site/'bin'/'mlpipe', 'train', *TINY, '--out', tmp_path/'run'], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path/'run'/'metrics.json').read_text())['n_samples'] == 2000


@pytest.mark.slow
@pytest.mark.background('mlpipe', 'train', first=True)  # the longest run: it starts with the session, beside the tests
def test_default_recipe(background):
    "`mlpipe train` with no options: the default model on the bundled sample, at 85% test accuracy or better."
    result = background.result('mlpipe', 'train')  # run in a folder of its own, in a process of its own
    assert result['returncode'] == 0, result['stderr']
    folder, = (Path(result['cwd'])/'runs').iterdir()
    accuracy = json.loads((folder/'metrics.json').read_text())['accuracy']
    # timings are shown, never asserted
    print(f"default recipe: test accuracy {accuracy:.4f} in {result['seconds']:.0f}s (process start included)")
    assert accuracy >= 0.85
    assert set(RUN_FILES) <= {p.name for p in folder.iterdir()}


def test_report_says_what_was_run(run):
    report = (run/'report.md').read_text()
    assert report.index('## What was run') < report.index('## Metrics'), report[:500]
    assert '| command | mlpipe train --model mlp --epochs 1 --batch-size 512 --config ' in report, report[:800]
    assert '| dataset | fashion_mnist_sample |' in report and '| epochs | 1 |' in report, report[:800]


def test_export_checks_and_refuses(run, tmp_path):
    out = tmp_path/'model.onnx'
    result = mlpipe('export', run/'best.pt', '--format', 'onnx', '--out', out)
    assert result.returncode == 0, result.stderr
    assert f'wrote {out} (' in result.stdout and 'same top-1 class for 64/64' in result.stdout, result.stdout
    before = out.read_bytes()
    again = mlpipe('export', run/'best.pt', '--format', 'onnx', '--out', out)  # never overwritten
    assert again.returncode == 2 and 'model.onnx exists' in again.stderr and out.read_bytes() == before, again.stderr
    unknown = mlpipe('export', run/'best.pt', '--format', 'zip', '--out', tmp_path/'m.zip')
    assert unknown.returncode == 2 and "invalid choice: 'zip'" in unknown.stderr, unknown.stderr
    image = tmp_path/'shirt.png'
    Image.new('L', (28, 28), 128).save(image)
    predicted = mlpipe('predict', out, image, tmp_path/'missing.png')  # the ONNX model predicts as the checkpoint
    expected = mlpipe('predict', run/'best.pt', image)
    assert predicted.stdout == expected.stdout and predicted.stdout.startswith(str(image)), predicted.stdout
    assert predicted.returncode == 1 and 'missing.png: no such file' in predicted.stderr, predicted.stderr
