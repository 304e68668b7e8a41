"""Training and evaluation under torchrun: 2 CPU processes over gloo on the loopback interface, started the way the
docs start several machines (a c10d rendezvous endpoint). Checks that rank 0 alone writes files, that 2 processes
with batches of b train like 1 process with batches of 2b (with `PruneEasy` skipping samples too), that a process
that dies or stops answering and a node that goes down each end the whole job in bounded time, that a run stopped by
a death on one node and by a lost node on two resumes to end bit-identical and two nodes evaluate like one, that
`mlpipe train` under torchrun counts every test sample once (predictions.csv has a row per sample and metrics.json
equals a single-process `mlpipe eval`), and that too little data or another number of processes on --resume are
refused. The runs that fail on purpose share one run, started three times, as the tests share the reference runs."""
import contextlib, csv, io, json, os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlpipe.checkpoint import load_checkpoint, save_checkpoint
from mlpipe.cli import main
from test_train_resume import assert_same

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name('distributed_worker.py')
AUDIT = Path(__file__).with_name('rank_audit')  # its sitecustomize makes any write by rank 1 to the run folder an error
STEPS_PER_EPOCH = 70  # the sample's 9,000 training images in global batches of 128, the last partial one dropped
PRUNE = ('--prune', 0.5)  # every run of the MLP skips half its well-learned samples in epoch 2: the hardest to share
MLPIPE = shutil.which('mlpipe', path=str(Path(sys.executable).parent)) or shutil.which('mlpipe')  # the command
N_TEST = 101  # an odd number of test images: 2 processes cannot split them evenly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def torchrun(*command, nproc=2) -> list:
    "torchrun with `nproc` processes on this machine, meeting at a c10d rendezvous endpoint as several machines would."
    return [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc-per-node', str(nproc),
            '--rdzv-backend', 'c10d', '--rdzv-endpoint', f'localhost:{free_port()}', *map(str, command)]


def env_for(folder: Path, **extra) -> dict:
    "The environment of a run: one thread per process, and rank 1 forbidden to write in `folder`."
    path = os.pathsep.join([str(AUDIT), os.environ.get('PYTHONPATH', '')])
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': path, 'MLPIPE_AUDIT_DIR': str(folder), **extra}


def run(command, folder, timeout=180, **env) -> subprocess.CompletedProcess:
    "Run `command` to its end; past `timeout` seconds, kill it with every process it started, and fail."
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env_for(folder, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try: stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too, not only torchrun
        proc.communicate()
        raise
    done = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    done.seconds = time.perf_counter() - start
    return done


def worker(folder, *args, nproc=2) -> list:
    args = [str(a) for a in args]
    if nproc == 1: return [sys.executable, str(WORKER), str(folder), *args]
    return torchrun(WORKER, folder, *args, nproc=nproc)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """The same MLP trained for 2 epochs by 2 processes with batches of 64 and by 1 process with batches of 128,
    `PruneEasy` skipping samples in the second: the runs the tests below compare with and resume towards."""
    folders = {n: tmp_path_factory.mktemp(f'ddp{n}') for n in (1, 2)}
    for n, folder in folders.items():
        done = run(worker(folder, '--batch-size', 128 // n, *PRUNE, nproc=n), folder)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folders


def test_only_rank_zero_writes_files(runs):
    folder = runs[2]  # rank 1 ran under the audit hook: a write would have failed the run
    assert sorted(p.name for p in folder.iterdir()) == ['best.pt', 'final.pt', 'last.pt', 'result.json']
    result = json.loads((folder/'result.json').read_text())
    assert result['n_predictions'] == result['test']['n_samples'] == 2000  # the sample's test split, each image once
    state = load_checkpoint(folder/'final.pt')
    assert state['world_size'] == 2 and len(state['rng']) == 2 and state['batches_per_epoch'] == STEPS_PER_EPOCH
    assert not torch.equal(state['rng'][0]['torch'], state['rng'][1]['torch'])  # each process its own random stream


def test_sync_batchnorm_is_refused_on_cpus(runs):
    refused = json.loads((runs[2]/'result.json').read_text())['sync_batchnorm_refused']  # asked for by the 2 processes
    assert refused.startswith('sync_batchnorm needs CUDA GPUs'), refused
    one = json.loads((runs[1]/'result.json').read_text())
    assert one['sync_batchnorm_refused'] is None  # one process: nothing to sync


def test_two_processes_train_like_one_with_twice_the_batch_and_skip_the_same_samples(runs):
    "With `PruneEasy`, each process skips rows of its own share; the scores are pooled, so both choose as one would."
    two, one = (json.loads((runs[n]/'result.json').read_text()) for n in (2, 1))
    assert two['skipped'] == one['skipped'] and one['skipped'][0] == 0 and one['skipped'][1] > 1000, one['skipped']
    w2, w1 = (load_checkpoint(runs[n]/'final.pt')['model'] for n in (2, 1))
    weights = max((w2[k] - w1[k]).abs().max().item() for k in w1)
    valid = abs(two['history'][-1]['valid_loss'] - one['history'][-1]['valid_loss'])
    test_loss, test_acc = (abs(two['test'][k] - one['test'][k]) for k in ('loss', 'accuracy'))
    print(f"\n2 x 64 vs 1 x 128, 2 epochs: weights differ by at most {weights:.2g}, valid loss by {valid:.2g}, "
          f"test loss by {test_loss:.2g}, test accuracy by {test_acc:.2g} "
          f"({two['test']['accuracy']:.4f} vs {one['test']['accuracy']:.4f})")
    assert [r['epoch'] for r in two['history']] == [1, 2]
    assert weights < 1e-4 and valid < 1e-4 and test_loss < 1e-4 and test_acc <= 2 / 2000


def two_nodes(folder, *args, port: int) -> list:
    "Two torchrun agents on this machine, each a node of one process, meeting at a c10d rendezvous on 127.0.0.1."
    agent = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2', '--nproc-per-node', '1',
             '--rdzv-backend', 'c10d', '--rdzv-endpoint', f'127.0.0.1:{port}', WORKER, folder, *args]
    agent = [str(a) for a in agent]
    return [agent, agent]


def start_nodes(commands, folder, logs: Path) -> list:
    "Start each agent in a session of its own, its output in LOGS/node{i}.log; the first one hosts the store."
    procs = []
    for i, command in enumerate(commands):
        log = open(logs/f'node{i}.log', 'w')
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env_for(folder), stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
        log.close()
        if i == 0: time.sleep(1)  # the first agent binds the rendezvous port: it hosts the store the other joins
    return procs


def last_step(logs: Path) -> int:
    "The last optimizer step rank 0 printed, whichever node it runs on."
    steps = [int(line) for i in (0, 1) for line in (logs/f'node{i}.log').read_text().split() if line.isdigit()]
    return max(steps, default=0)


def kill_tree(pid: int):
    "SIGKILL process `pid` and every process under it (torchrun starts its workers in sessions of their own)."
    children = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try: fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError: continue  # it ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        with contextlib.suppress(ProcessLookupError): os.kill(p, signal.SIGKILL)


def wait_all(procs, timeout: float) -> list:
    "Exit statuses of `procs`; past `timeout` seconds, kill every node and fail."
    end = time.monotonic() + timeout
    try: return [p.wait(timeout=max(0.1, end - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs: kill_tree(p.pid)
        raise


@pytest.mark.slow
def test_a_run_outlives_a_process_that_dies_and_a_node_that_goes_down_and_ends_bit_identical(runs, tmp_path):
    """One run, three starts: on one node, rank 1 dies in the first epoch; resumed on two nodes (two torchrun agents),
    one node is killed in the second, pruned, epoch; resumed on two nodes again, it ends as the uninterrupted run does,
    and the two nodes count each test image once. Each failure ends the whole job in bounded time."""
    folder, logs = tmp_path/'run', tmp_path/'logs'
    folder.mkdir()
    logs.mkdir()
    die_at = 40  # rank 1 exits after step 40, before its share of that step's checkpoint: rank 0 keeps step 35's
    done = run(worker(folder, '--batch-size', 64, *PRUNE, '--every', 5, '--die-at', die_at), folder, timeout=120)
    # start-up included
    assert done.returncode != 0 and done.seconds < 90, f"exit {done.returncode} after {done.seconds:.0f}s"
    assert 'ChildFailedError' in done.stderr and 'exitcode  : 3' in done.stderr, done.stderr[-3000:]  # its summary
    saved = load_checkpoint(folder/'last.pt')
    assert saved['epoch'] == 0 and 0 < saved['batch'] < die_at and not (folder/'final.pt').exists()

    nodes = start_nodes(two_nodes(folder, '--batch-size', 64, *PRUNE, '--every', 5, '--resume', port=free_port()),
                        folder, logs)
    end = time.monotonic() + 150
    while last_step(logs) < STEPS_PER_EPOCH + 12 and time.monotonic() < end and all(p.poll() is None for p in nodes):
        time.sleep(0.2)
    assert last_step(logs) >= STEPS_PER_EPOCH + 12, (logs/'node0.log').read_text()[-3000:]
    kill_tree(nodes[1].pid)  # the second node's agent and its process, as when a machine goes down
    start = time.monotonic()
    status = wait_all(nodes, timeout=120)
    assert status[0] != 0 and time.monotonic() - start < 90, f"the surviving node exited {status[0]}"
    saved = load_checkpoint(folder/'last.pt')
    assert saved['epoch'] == 1 and 0 < saved['batch'] < STEPS_PER_EPOCH and not (folder/'final.pt').exists()

    nodes = start_nodes(two_nodes(folder, '--batch-size', 64, *PRUNE, '--resume', port=free_port()), folder, logs)
    output = lambda: ''.join((logs/f'node{i}.log').read_text()[-3000:] for i in (0, 1))  # noqa: E731
    assert wait_all(nodes, timeout=180) == [0, 0], output()
    assert_same(load_checkpoint(folder/'final.pt'), load_checkpoint(runs[2]/'final.pt'))  # as if never stopped
    two_nodes_result, one_node_result = (json.loads((f/'result.json').read_text()) for f in (folder, runs[2]))
    assert two_nodes_result['n_predictions'] == two_nodes_result['test']['n_samples'] == 2000  # each test image once
    assert two_nodes_result['test'] == one_node_result['test']


def test_a_process_that_stops_answering_ends_the_job_after_the_timeout(tmp_path):
    done = run(worker(tmp_path, '--hang-at', 3), tmp_path, timeout=120, MLPIPE_DIST_TIMEOUT='3')
    # not the default 300s
    assert done.returncode != 0 and done.seconds < 90, f"exit {done.returncode} after {done.seconds:.0f}s"
    assert 'Timed out' in done.stderr and 'ChildFailedError' in done.stderr, done.stderr[-3000:]


@pytest.fixture(scope='module')
def images(tmp_path_factory) -> Path:
    "A folder dataset of 8x8 images of two classes told apart by brightness: 120 to train on, 101 to test."
    root, g = tmp_path_factory.mktemp('images'), np.random.default_rng(0)
    for split, counts in (('train', (60, 60)), ('test', (51, 50))):
        for label, count in enumerate(counts):
            (root/split/f'class{label}').mkdir(parents=True)
            for i in range(count):
                pixels = g.integers(0, 160, (8, 8, 3)) + 90 * label
                Image.fromarray(pixels.astype(np.uint8)).save(root/split/f'class{label}'/f'{i}.png')
    (root/'tiny.yaml').write_text(f"dataset: folder:{root}\nmodel: mlp\nmodel_args: {{hidden: [16]}}\nepochs: 1\n")
    return root


@pytest.fixture(scope='module')
def cli_run(images, tmp_path_factory):
    "`mlpipe train` under torchrun with 2 processes; returns the run folder and what the job printed."
    folder = tmp_path_factory.mktemp('cli')/'run'
    command = torchrun('--no-python', MLPIPE, 'train', '--config', images/'tiny.yaml', '--batch-size', 16,
                       '--out', folder)
    done = run(command, folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder, done.stdout


def test_mlpipe_train_under_torchrun_writes_and_prints_once(cli_run):
    folder, stdout = cli_run
    names = sorted(p.name for p in folder.iterdir())  # rank 1 ran under the audit hook: it wrote none of them
    assert [n for n in names if not n.endswith('.png')] == sorted(['best.pt', 'config.yaml', 'history.csv', 'last.pt',
                                                                   'metrics.json', 'predictions.csv', 'report.md'])
    assert stdout.count('run folder:') == 1 and stdout.count('epoch 1/1') == 1 and 'x 2 processes' in stdout, stdout
    rows = list(csv.DictReader(open(folder/'predictions.csv')))
    assert [int(r['index']) for r in rows] == list(range(N_TEST))
    assert json.loads((folder/'metrics.json').read_text())['n_samples'] == N_TEST


def mlpipe_here(*args) -> tuple[int, list]:
    "Run `mlpipe ARGS` here, with one thread as the torchrun processes had; its exit status and stderr lines."
    threads, err = torch.get_num_threads(), io.StringIO()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            status = main([str(a) for a in args])
    finally: torch.set_num_threads(threads)
    return status, err.getvalue().splitlines()


def test_its_metrics_equal_one_process_evaluating_its_model(cli_run, tmp_path):
    folder, _ = cli_run
    assert mlpipe_here('eval', folder/'best.pt', '--out', tmp_path/'eval') == (0, [])
    for name in ('metrics.json', 'predictions.csv'):
        assert (tmp_path/'eval'/name).read_text() == (folder/name).read_text(), name


def test_mlpipe_resume_with_another_number_of_processes_is_refused(cli_run, tmp_path):
    folder = tmp_path/'run'
    shutil.copytree(cli_run[0], folder)
    state = load_checkpoint(folder/'last.pt')  # as if the run had been stopped before its last epoch
    state['epoch'], state['history'] = state['epochs'] - 1, state['history'][:-1]
    save_checkpoint(state, folder/'last.pt')
    assert mlpipe_here('train', '--out', folder, '--resume') == (1, [
        f"mlpipe: error: Cannot resume from {folder/'last.pt'}: "
        "it was saved by a run of 2 processes and this run has 1: "
        "resume with 2 (torchrun --nproc-per-node 2, or without torchrun for 1)."])


def test_too_few_training_samples_for_the_processes(images, tmp_path):
    folder = tmp_path/'run'  # 108 training images cannot give 2 processes a share of each batch of 256
    command = torchrun('--no-python', MLPIPE, 'train', '--config', images/'tiny.yaml', '--batch-size', 256,
                       '--out', folder)
    done = run(command,
               folder, timeout=120)
    assert done.returncode != 0 and not folder.exists()
    assert ('mlpipe (process 0 of 2): error: 108 training samples are too few for 2 processes with batch_size=256: '
            'process 1 would get none. Use fewer processes or a smaller batch size.') in done.stderr, \
        done.stderr[-3000:]
