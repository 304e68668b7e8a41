"""The suite's long runs, in one process beside the tests: notebooks in Jupyter kernels, and `mlpipe` commands.

Some tests only check the end of a long run (a notebook's "Run All", the default recipe, the quick bench). conftest.py
starts this script when the session starts, with the runs the selected tests need (longest first), and those tests go
last: the other tests run meanwhile, each process on one thread, so the 2 cores are both busy. Being a process, not a
thread of pytest's, nothing here shares a working folder, stdout or warning filters with a test that changes them.

Usage: python tests/background.py OUT JOBS_JSON
JOBS_JSON is a list of jobs, each ['notebook', NAME under nbs/], ['mlpipe', ARGUMENTS...], ['site'] or ['probe']; they
run KERNELS at a time (MLPIPE_KERNELS, default 2) in the given order, and job i writes OUT/i.json when it ends:
{'seconds', 'error'} for a notebook, {'seconds', 'returncode', 'stdout', 'stderr', 'cwd'} for a command (run in the
folder OUT/i), {'project', 'html', 'manifest', 'log'} for the docs site's stand-in (scripts/render_site.py, built in
OUT/i), and for the probe what a cell sees in this session's kernels and in a plain one (`probe_kernels`).

Each notebook has a kernel of its own, as a fresh "Run All" has, in a scratch copy of the project (nothing it writes
lands in the repository; the last cell's `nbdev_export()` rewrites the copy's package, so each running kernel has a copy
of its own). Cells marked `#| slow` are dropped unless MLPIPE_SLOW=1, in which case they run like every other cell.
The kernels are forked from one process that has imported torch and the other libraries (tests/kernel_zygote.py: the
imports cost each kernel 5 CPU-seconds, a minute of the suite over all the notebooks); MLPIPE_FORK_KERNELS=0 starts
plain `python3` kernels instead."""
import importlib.util, json, os, queue, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SLOW = os.environ.get('MLPIPE_SLOW', '') not in ('', '0')
SKIP_IN_COPY = ('.git', '.venv', '_proc', '_docs', 'runs', 'data', '__pycache__', '.ipynb_checkpoints',
                '*.egg-info', '.pytest_cache', '.ruff_cache')
TIMEOUT_S = 3600  # one cell; the bench's slow cell (the whole bench, about half an hour) is the longest
KERNELS = max(1, int(os.environ.get('MLPIPE_KERNELS', '2')))  # runs at once (1 to time a notebook alone)
# kernels forked from a process that imported torch already (tests/kernel_zygote.py); MLPIPE_FORK_KERNELS=0: plain ones
FORK_KERNELS = os.environ.get('MLPIPE_FORK_KERNELS', '1') not in ('', '0')
KERNEL_NAME = 'python3'  # the kernelspec the notebooks run on: 'python3', or the zygote's once it is serving


def is_slow(source: str) -> bool:
    "Is this cell marked `#| slow` (nbdev's tst_flags) in its leading directive comments?"
    return any(re.match(r'#\|\s*slow\b', line) for line in source.splitlines() if line.startswith('#|'))


def copy_project(dest: Path) -> Path:
    "The project without its git history, venv and build outputs, in the scratch folder `dest`."
    copy = dest/ROOT.name
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(*SKIP_IN_COPY))
    return copy


def kernel_env(copy: Path) -> dict:
    "The kernel's environment: the copy's package first on the path, as an editable install of the copy would be."
    path = [str(copy)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])
    # JupyterLab's kernel draws figures with the inline backend: MPLBACKEND=Agg (set for pytest) would hide them
    env = {**{k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}, 'PYTHONPATH': os.pathsep.join(path)}
    env['PATH'] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `mlpipe` and `torchrun` of this venv
    return env


def run_notebook(name: str, copies: queue.Queue) -> dict:
    "Run notebook `name` in a kernel of its own, in a project copy taken from `copies`: its seconds, or its error."
    import nbformat
    from nbclient import NotebookClient
    copy = copies.get()
    try:
        path = copy/'nbs'/name
        nb = nbformat.read(path, as_version=4)
        if not SLOW: nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and is_slow(c.source))]
        client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name=KERNEL_NAME,
                                resources={'metadata': {'path': str(path.parent)}})
        start = time.monotonic()
        with tempfile.TemporaryFile('w+') as log:  # the kernel's own stderr, shown with the error when the run fails
            try: client.execute(env=kernel_env(copy), stderr=log)  # raises CellExecutionError with the failing cell
            except Exception as e:
                log.seek(0)
                return {'error': f"{name}: {e}\nThe kernel's stderr:\n{log.read()[-3000:]}"}
        seconds = time.monotonic() - start
    finally: copies.put(copy)
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    return {'seconds': seconds, 'error': f'{name}: error outputs {errors}' if errors else None}


def run_mlpipe(args: list, cwd: Path) -> dict:
    "Run `mlpipe ARGS` (the code of the `mlpipe` script) in a process of its own in `cwd`: what `subprocess.run` gives."
    cwd.mkdir(parents=True)
    start = time.monotonic()
    done = subprocess.run([sys.executable, '-m', 'mlpipe.cli', *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    return {'seconds': time.monotonic() - start, 'returncode': done.returncode, 'stdout': done.stdout,
            'stderr': done.stderr, 'cwd': str(cwd)}


def build_site(folder: Path) -> dict:
    "nbdev_proc_nbs on a copy of the project made in `folder`, and its pages as HTML (scripts/render_site.py)."
    spec = importlib.util.spec_from_file_location('render_site', ROOT/'scripts'/'render_site.py')
    render_site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_site)
    project, manifest, log = render_site.build(folder/'html', folder)
    return {'project': str(project), 'html': str(folder/'html'), 'manifest': manifest, 'log': log}


PROBE = ("import os, sys, matplotlib, mlpipe\n"
         "print(mlpipe.WHICH, os.getcwd(), sys.path[0], matplotlib.get_backend(), os.environ.get('PROBE'))")


def probe_kernels(folder: Path) -> dict:
    "What a notebook in `folder` sees in this session's kernels and in a plain 'python3' kernel, started alike."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    copy = folder/'copy'  # a project copy whose mlpipe says which it is
    (copy/'mlpipe').mkdir(parents=True)
    (copy/'mlpipe'/'__init__.py').write_text("WHICH = 'the copy'\n")
    def run(kernel_name, source):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
        client = NotebookClient(nb, kernel_name=kernel_name, timeout=TIMEOUT_S,
                                resources={'metadata': {'path': str(folder)}})
        try: client.execute(env={**kernel_env(copy), 'PROBE': 'set by the probe'})
        except CellExecutionError as e: return f'{e.ename}: {e.evalue}'
        return nb.cells[0].outputs[0]['text']
    return {'kernel': KERNEL_NAME, 'folder': str(folder), 'copy': str(copy), 'this session': run(KERNEL_NAME, PROBE),
            'plain': run('python3', PROBE), 'a name the zygote imported': run(KERNEL_NAME, 'torch.zeros(1)')}


def run_job(i: int, job: list, out: Path, copies: queue.Queue):
    "Run job number `i` and write its result to OUT/i.json (atomically: a reader never sees half of it)."
    try:
        if job[0] == 'notebook': result = run_notebook(job[1], copies)
        elif job[0] == 'mlpipe': result = run_mlpipe(job[1:], out/str(i))
        elif job[0] == 'probe': result = probe_kernels(Path(tempfile.mkdtemp(prefix=f'{i}-', dir=out)))
        else: result = build_site(out/str(i))
    except Exception as e: result = {'error': f'{job}: {type(e).__name__}: {e}'}
    (out/f'{i}.tmp').write_text(json.dumps(result))
    os.replace(out/f'{i}.tmp', out/f'{i}.json')


def start_zygote(folder: Path):
    "tests/kernel_zygote.py serving kernels from `folder`, and its kernelspec's name; (None, 'python3') where it can't."
    if not FORK_KERNELS or not hasattr(os, 'fork'): return None, 'python3'
    import kernel_zygote  # this file's neighbour
    sock = str(folder/'zygote.sock')
    env = {k: v for k, v in os.environ.items() if k not in ('MPLBACKEND', 'PYTHONPATH')}  # a kernel's, less the copy
    env['MPLBACKEND'] = 'module://matplotlib_inline.backend_inline'  # what ipykernel sets before a notebook's imports
    proc = subprocess.Popen([sys.executable, kernel_zygote.__file__, 'serve', sock], env=env, stdout=subprocess.PIPE,
                            text=True)
    if proc.stdout.readline().strip() != 'ready':  # its imports failed: plain kernels, which will show why
        proc.kill()
        return None, 'python3'
    os.environ['JUPYTER_PATH'] = os.pathsep.join([str(folder), *filter(None, [os.environ.get('JUPYTER_PATH')])])
    return proc, kernel_zygote.kernelspec(folder, sock)


def main(out: str, jobs: str):
    global KERNEL_NAME
    out, jobs = Path(out), json.loads(jobs)
    workers = min(KERNELS, len(jobs)) or 1
    copies, zygote, kernels = queue.Queue(), None, None
    if any(job[0] == 'notebook' for job in jobs):
        for i in range(workers): copies.put(copy_project(Path(tempfile.mkdtemp(prefix=f'project{i}-', dir=out))))
    if any(job[0] in ('notebook', 'probe') for job in jobs):
        kernels = Path(tempfile.mkdtemp(prefix='kernels-'))  # short: a socket's path has at most 107 characters
        zygote, KERNEL_NAME = start_zygote(kernels)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for i, job in enumerate(jobs): pool.submit(run_job, i, job, out, copies)
    finally:
        if zygote: zygote.kill()
        if kernels: shutil.rmtree(kernels, ignore_errors=True)


if __name__ == '__main__': main(*sys.argv[1:])
