"""The recipe, its run folders and the command's parsing and reporting, in-process: the faults of issue 12 that need
no training, and the proof that `--help`, the config checks and the table of settings come from one declaration."""
import contextlib, io, math

import pytest

from mlpipe.cli import build_parser, error_lines, exit_status, main
from mlpipe.pipeline import prediction_line
from mlpipe.recipe import (DEFAULTS, MAX_CONFIG_BYTES, SETTINGS, check_config, given_settings, read_config,
                           requirement, settings_table)
from mlpipe.runs import RunFolderError, Terminated, UsageError, check_out, claim_folder, release_folder, resume_plan


def run_main(*argv, cwd=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def test_help_checks_and_table_come_from_one_declaration(tmp_path):
    help_text = ' '.join(build_parser().commands['train'].format_help().split())
    table = settings_table()
    for s in SETTINGS:
        assert f"`{s.name}`" in table and requirement(s) in table, s.name
        metavar = f"[{s.metavar}]" if s.kind is bool else s.metavar  # --augment alone means true
        allowed = '' if s.kind is str and not s.choices else f"; {requirement(s)}"
        if s.flag: assert f"{s.flag} {metavar} {s.help}{allowed}" in help_text, s.name
        assert check_config({s.name: s.default}) == {s.name: s.default}
        if s.low is not None:  # a value just outside the range is refused, with the same words, from flag and file
            bad = s.low - 1 if s.open not in ('low', 'both') else s.low
            (tmp_path/'c.yaml').write_text(f"{s.name}: {bad}\n")
            for flags, file, where in [({s.name: str(bad)}, None, s.flag), ({}, tmp_path/'c.yaml', f"{s.name} in ")]:
                with pytest.raises(UsageError) as e: given_settings(flags, file)
                assert where in str(e.value) and requirement(s) in str(e.value), str(e.value)
    assert set(DEFAULTS) == {s.name for s in SETTINGS}


def test_claiming_a_folder_is_exclusive(tmp_path):
    first = claim_folder(tmp_path/'run')
    try:
        with pytest.raises(RunFolderError, match='is in use by another mlpipe run'): claim_folder(tmp_path/'run')
    finally: release_folder(first)
    release_folder(claim_folder(tmp_path/'run'))  # free again once released


def test_a_folder_with_only_its_config_is_usable_again(tmp_path):
    folder = tmp_path/'stopped'
    folder.mkdir()
    (folder/'config.yaml').write_text('epochs: 2\n')
    (folder/'history.csv').write_text('epoch\n')
    assert check_out(folder) == folder  # a new run may use it
    assert resume_plan(folder) == ('start', {'epochs': 2})  # and --resume starts it afresh
    (tmp_path/'empty').mkdir()
    with pytest.raises(RunFolderError, match='no last.pt and no config.yaml'): resume_plan(tmp_path/'empty')


def test_eval_hint_does_not_name_resume(tmp_path):
    (tmp_path/'metrics.json').write_text('{}')
    with pytest.raises(RunFolderError) as e: check_out(tmp_path, can_resume=False)
    assert '--resume' not in str(e.value)


BAD = [  # (arguments, what stderr says); every one is a usage error, exit status 2
    (['train', '--lr', '1e308'], '--lr must be a positive number of at most 3.4e+38'),
    (['train', '--device', 'cuda:99'], 'the devices are: cpu'),
    (['train', '--epoch', '2'], 'unrecognized arguments: --epoch 2 (did you mean --epochs?)'),
    (['train', '--batchsize', '64'], '(did you mean --batch-size?)'),
    (['predict', 'shoe.png'], 'give a checkpoint, then the image files'),
    (['train', '--epochs', 'x' * 100_000], "--epochs must be a whole number of at least 1, got 'xxx"),
]

@pytest.mark.parametrize('args,message', BAD, ids=[' '.join(a)[:30] for a, _ in BAD])
def test_usage_errors_exit_2_with_one_clear_line(args, message, tmp_path):
    status, out, err = run_main(*args, '--out', tmp_path/'never') if args[0] == 'train' else run_main(*args)
    assert (status, out) == (2, ''), err
    assert message in err and len(err) < 600, err  # a huge value is never echoed whole
    assert not (tmp_path/'never').exists()


def test_config_files_that_cannot_be_configs(tmp_path):
    (tmp_path/'bomb.yaml').write_text('a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\n')
    (tmp_path/'big.yaml').write_text('# padding\n' * (MAX_CONFIG_BYTES // 10 + 1))
    (tmp_path/'latin.yaml').write_bytes('dataset: caf\xe9\n'.encode('latin-1'))
    for name, message in [('bomb.yaml', 'uses a YAML alias'), ('big.yaml', 'is over 1,000,000 bytes'),
                          ('latin.yaml', 'latin.yaml is not UTF-8 text')]:
        with pytest.raises(UsageError, match=message): read_config(tmp_path/name)
        status, _, err = run_main('train', '--config', tmp_path/name)
        assert status == 2 and name in err and len(err.splitlines()) == 1, err
    with pytest.raises(UsageError, match='over'): read_config('/dev/zero')


def test_only_usage_errors_exit_2():
    deep = ValueError('Expected more than 1 value per channel when training')  # from inside torch
    assert exit_status(deep) == 1
    assert error_lines(deep)[1].startswith('This is unexpected; run again with --debug')
    assert exit_status(UsageError('x')) == 2
    assert exit_status(Terminated()) == 143 and exit_status(KeyboardInterrupt()) == 130
    assert 'SIGTERM' in error_lines(Terminated())[0] and '--resume' in error_lines(Terminated())[0]


def test_prediction_lines_stay_three_fields():
    class P: label, probability = 'T-shirt\ttop', 0.5
    line = prediction_line('a\tb\nc.png', P())
    assert line.split('\t') == ['a\\tb\\nc.png', 'T-shirt\\ttop', '0.500'] and '\n' not in line


def test_a_float32_learning_rate_is_accepted():
    assert math.isclose(check_config({'lr': '3.4e38'})['lr'], 3.4e38)
