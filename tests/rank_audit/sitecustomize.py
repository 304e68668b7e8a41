"""Put on PYTHONPATH by tests/test_distributed.py: in every process of rank 1 or more, writing anything under
$MLPIPE_AUDIT_DIR (the run folder) is an error. It proves that rank 0 alone writes a run's files."""
import os
import sys

_WATCHED = os.environ.get('MLPIPE_AUDIT_DIR')
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = ('os.mkdir', 'os.rename', 'os.remove', 'os.rmdir', 'os.symlink', 'os.link', 'os.truncate', 'os.chmod')


def _inside(path) -> bool:
    try: return os.path.realpath(os.fsdecode(path)).startswith(os.path.realpath(_WATCHED))
    except (TypeError, ValueError): return False  # a file descriptor, not a path


def _refuse_writes(event, args):
    if event == 'open':
        path, mode, flags = args
        writes = any(c in mode for c in 'wax+') if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
        if writes and _inside(path):
            raise PermissionError(f"rank {os.environ['RANK']} wrote {path}: only rank 0 may write the run folder")
    elif event in _WRITE_EVENTS and args and any(_inside(a) for a in args[:2]
                                                 if isinstance(a, (str, bytes, os.PathLike))):
        raise PermissionError(f"rank {os.environ['RANK']} changed {args[0]}: only rank 0 may write the run folder")


if _WATCHED and os.environ.get('RANK', '0') != '0': sys.addaudithook(_refuse_writes)
