"""`mlpipe bench` end to end, in a subprocess: the quick run on the bundled sample writes every figure to its JSON.
Timings are never asserted (the machines are shared); only that each figure is a positive number, or null where an
accuracy was not reached."""
import json, math, subprocess, sys

KEYS = ['data_speedup', 'trainer_overhead', 'bf16_channels_last_speedup', 'seconds_to_91', 'seconds_to_93',
        'baseline_seconds_to_91', 'machine']


def test_quick_bench_writes_its_figures(tmp_path):
    out = tmp_path/'out.json'
    result = subprocess.run([sys.executable, '-m', 'mlpipe.cli', 'bench', '--quick', '--json', str(out)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert 'time to 93% test accuracy: mlpipe' in result.stdout  # the table
    figures = json.loads(out.read_text())
    assert set(KEYS) <= set(figures), sorted(figures)
    for key in ('data_speedup', 'trainer_overhead', 'bf16_channels_last_speedup'):
        assert isinstance(figures[key], float) and math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])
    for key in ('seconds_to_91', 'seconds_to_93', 'baseline_seconds_to_91'):
        assert figures[key] is None or figures[key] > 0, (key, figures[key])
    assert {'cpu', 'cores', 'threads', 'torch'} <= set(figures['machine'])
    assert figures['quick'] is True


def test_bench_refuses_a_json_file_in_a_missing_folder(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'mlpipe.cli', 'bench', '--quick', '--json',
                             str(tmp_path/'no'/'out.json')],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'does not exist' in result.stderr, result.stderr
    assert 'choosing' not in result.stdout  # refused before measuring anything
