"""`mlpipe bench` end to end: the quick run on the bundled sample, in a subprocess, writes every figure to its JSON,
each goal with a verdict (that run is tests/background.py's, started with the session, beside the other tests); the
refusals run in-process. Timings are never asserted (the machines are shared); only that each figure is a positive
number, or null where an accuracy was not reached. The GPU path runs where there is a CUDA GPU."""
import contextlib, io, json, math, subprocess, sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mlpipe.cli import main

SECTIONS = ['goals', 'runs', 'data', 'overhead', 'precision', 'arithmetic', 'tries', 'processes', 'machine', 'recipes']
GOALS = ['time to 93%: RECIPE / REFERENCE', 'FRONTIER: best test accuracy', 'FRONTIER: training time to 94%',
         "time to 91%: the blog's / RECIPE_91's", 'main job: test accuracy on the sample',
         'main job: training time / SAMPLE_REFERENCE', 'data: in-memory loader / DataLoader',
         'overhead: Trainer / hand-written loop']


def bench(tmp_path, *args, timeout=900):
    return subprocess.run([sys.executable, '-m', 'mlpipe.cli', 'bench', '--quick', *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


def bench_here(tmp_path, *args) -> SimpleNamespace:
    "`mlpipe bench --quick ARGS` in this process, in `tmp_path` (for a refusal: no need to pay a process's imports)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(tmp_path), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(['bench', '--quick', *map(str, args)])
    return SimpleNamespace(returncode=status, stdout=out.getvalue(), stderr=err.getvalue())


def positive(value) -> bool: return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.background('mlpipe', 'bench', '--quick', '--json', 'out.json')  # started with the session
def test_quick_bench_writes_its_figures(background):
    result = background.result('mlpipe', 'bench', '--quick', '--json', 'out.json')  # in a folder of its own
    assert result['returncode'] == 0, result['stderr']
    assert 'main job: test accuracy on the sample' in result['stdout'] and 'training time only' in result['stdout']
    figures = json.loads((Path(result['cwd'])/'out.json').read_text())
    assert set(SECTIONS) <= set(figures), sorted(figures)
    assert [g['name'] for g in figures['goals']] == GOALS
    assert all(g['met'] in (True, False, None) and g['op'] in ('>=', '<=') for g in figures['goals'])
    assert sorted(figures['runs']) == ['blog', 'frontier', 'main_job', 'recipe', 'recipe_91', 'reference',
                                       'sample_reference']
    assert figures['runs']['recipe_91']['epochs'] == 2  # RECIPE_91's pruned second epoch runs in the quick bench too
    for name, run in figures['runs'].items():
        assert all(run[f'seconds_to_{t}'] is None or run[f'seconds_to_{t}'] > 0 for t in (91, 93, 94)), (name, run)
    for key in ('data_speedup',):
        assert positive(figures['data'][key]), figures['data']
    assert positive(figures['overhead']['trainer_overhead'])
    for key in ('flops_per_image', 'training_flop_per_s', 'matmul_fp32_flop_per_s', 'matmul_bf16_flop_per_s'):
        assert positive(figures['arithmetic'][key]), (key, figures['arithmetic'])
    compiled = figures['tries']['compile']
    assert 'unavailable' in compiled or positive(compiled['speedup']), compiled
    processes = figures['processes']  # the quick run tries one process against one: the try's code, no processes
    assert positive(processes['speedup']) and processes['faster'] is False, processes
    assert figures['runs']['recipe']['options']['processes'] == 1 and 'one-thread processes' in result['stdout']
    assert {'cpu', 'cores', 'threads', 'torch'} <= set(figures['machine'])
    assert figures['quick'] is True and figures['device'] == 'cpu'


def test_bench_refuses_a_json_file_in_a_missing_folder(tmp_path):
    result = bench_here(tmp_path, '--json', tmp_path/'no'/'out.json')
    assert result.returncode == 2 and 'does not exist' in result.stderr, result.stderr
    assert 'choosing' not in result.stdout  # refused before measuring anything


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA GPU: the refusal needs none')
def test_bench_refuses_cuda_without_a_gpu(tmp_path):
    result = bench_here(tmp_path, '--device', 'cuda')
    assert result.returncode == 2 and 'not available here' in result.stderr, result.stderr
    assert 'choosing' not in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason='the GPU path needs a CUDA GPU; this machine has none')
def test_quick_bench_on_the_gpu(tmp_path):
    out = tmp_path/'gpu.json'
    result = bench(tmp_path, '--device', 'cuda', '--json', str(out))
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures['device'].startswith('cuda') and 'gpu' in figures['machine']
    assert figures['arithmetic']['device'] == 'cuda' and positive(figures['arithmetic']['images_per_s'])
    assert figures['precision']['auto']['precision'] in ('bf16', 'fp16')
    recipe = figures['runs']['recipe']
    assert recipe['epochs'] >= 1 and positive(recipe['seconds']), recipe
    assert all(g['met'] in (True, False, None) for g in figures['goals'])
