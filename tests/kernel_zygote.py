"""Jupyter kernels that start in a fraction of a second: forked from a process that has imported torch already.

A notebook's kernel spends about 5 CPU-seconds importing torch, torchvision, torchmetrics and IPython before its first
cell does anything; tests/background.py starts a kernel for each of some 25 notebooks, two at a time on two cores, so
the imports alone cost the suite about a minute. Here one process (the zygote) imports those libraries once, and each
kernel is a fork of it: a fresh interpreter state for the notebook (its own namespace, its own working folder, its
own environment, the project copy's `mlpipe` imported by its first cell), with the third-party modules already in
memory, as PyTorch's DataLoader workers fork a process that imported torch. The zygote never imports `mlpipe` (each
kernel imports the copy it runs in) and never runs a torch operation (so no thread pool exists to be copied half-way);
torchmetrics imports matplotlib's pyplot, so the zygote imports it with the inline backend that ipykernel sets for a
kernel before the notebook's first import.

Jupyter starts a kernel by running its kernelspec's command; this file is that command too (`launch`): a small
process that asks the zygote for a kernel, hands it its stdin, stdout and stderr and its environment, passes on the
signals Jupyter sends it (interrupt, terminate), and ends when the kernel ends. The kernel ends when its launcher
ends (killed, say), as a kernel ends with the process Jupyter started.

Usage: `python kernel_zygote.py serve SOCKET` (prints `ready` once the imports are done), and, as a kernelspec's
argv, `python kernel_zygote.py launch SOCKET -f {connection_file}`. `kernelspec(folder, socket)` writes the spec."""
import json, os, signal, socket, sys, time

PRELOAD = ('torch', 'torch._dynamo', 'torchvision', 'torchmetrics', 'numpy', 'PIL.Image', 'ipykernel.kernelapp',
           'ipywidgets', 'tqdm.auto', 'nbformat', 'fastcore.test', 'nbdev.showdoc')
NAME = 'python3-forked'  # the kernelspec's name


def kernelspec(folder, sock: str) -> str:
    "Write the kernelspec that launches kernels from the zygote at `sock` into folder/kernels/NAME; its name."
    spec = os.path.join(str(folder), 'kernels', NAME)
    os.makedirs(spec, exist_ok=True)
    with open(os.path.join(spec, 'kernel.json'), 'w') as f:
        json.dump({'argv': [sys.executable, os.path.abspath(__file__), 'launch', sock, '-f', '{connection_file}'],
                   'display_name': 'Python 3 (forked)', 'language': 'python', 'interrupt_mode': 'signal'}, f)
    return NAME


def _alive(pid: int) -> bool:
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    except PermissionError: return True
    return True


def _kernel(request: dict, base_path: list):
    "In the forked child: become the kernel `python -m ipykernel_launcher ARGS` would start, then exit."
    import runpy, threading
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores its children; the kernel waits for its own
    os.setsid()
    launcher = request['launcher']
    def watch():  # a kernel ends with its launcher, as it would with the process Jupyter started
        while _alive(launcher): time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()
    os.environ.clear()
    os.environ.update(request['env'])
    os.chdir(request['cwd'])
    extra = [p for p in request['env'].get('PYTHONPATH', '').split(os.pathsep) if p]
    sys.path[:] = [request['cwd'], *extra, *base_path]  # what `python -m` in cwd with this PYTHONPATH would have
    # IPKernelApp read JPY_PARENT_PID (Jupyter sets it for a kernel) when the zygote imported it: say it again
    parent = request['env'].get('JPY_PARENT_PID')
    sys.argv = ['ipykernel_launcher', *request['argv'], *([f'--IPKernelApp.parent_handle={parent}'] if parent else [])]
    code = 0
    try: runpy.run_module('ipykernel_launcher', run_name='__main__', alter_sys=True)
    except SystemExit as e: code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)


def serve(sock: str):
    "Import the libraries, then fork a kernel for each launcher that connects to `sock`."
    import ctypes, importlib
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: end with the process that started it
    base_path = sys.path[1:]  # without this file's folder
    for name in PRELOAD: importlib.import_module(name)
    assert not any(m == 'mlpipe' or m.startswith('mlpipe.') for m in sys.modules), 'the zygote must not import mlpipe'
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the system: none is left a zombie
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock)
    server.listen(8)
    print('ready', flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                server.close()
                for target, fd in enumerate(fds): os.dup2(fd, target)
                for fd in fds: os.close(fd)
                conn.close()
                _kernel(request, base_path)
            for fd in fds: os.close(fd)
            conn.sendall(str(pid).encode())


def launch(sock: str, argv: list):
    "Ask the zygote for a kernel with this process's stdio, folder and environment; pass signals on; wait for it."
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(sock)
    request = {'argv': argv, 'cwd': os.getcwd(), 'env': dict(os.environ), 'launcher': os.getpid()}
    socket.send_fds(client, [json.dumps(request).encode()], [0, 1, 2])
    pid = int(client.recv(64))
    client.close()
    def forward(signum, frame):
        try: os.kill(pid, signum)
        except ProcessLookupError: pass
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    while _alive(pid): time.sleep(0.05)


if __name__ == '__main__':
    if sys.argv[1] == 'serve': serve(sys.argv[2])
    else: launch(sys.argv[2], sys.argv[3:])
