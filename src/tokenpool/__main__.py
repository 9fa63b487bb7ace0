"""``python -m tokenpool`` and the ``tokenpool`` console script: the command line (`tokenpool.cli.main`), imported
inside `main`, so that Ctrl-C while it loads is one line and exit 130, not a traceback."""

import atexit
import gc
import sys


def main() -> int:
    """Import the command line and run it; the console script's entry point (pyproject.toml)."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:  # (once it runs, `tokenpool.cli.main` says the same of a later Ctrl-C)
        if sys.stderr is not None:  # (None: started with stderr closed, 2>&-; print would write to stdout)
            print("tokenpool: interrupted", file=sys.stderr)
        return 130
    code = run()
    # frozen at exit (the first atexit handler, before the interpreter's teardown collections), the objects a loaded
    # model and its libraries leave (~465,000) are not walked again (1-2 s of CPU after every command that loaded a
    # model); not frozen here: a caller that runs `main` in its own process and goes on keeps its collections
    atexit.unregister(gc.freeze)  # (once, however many times it runs)
    atexit.register(gc.freeze)
    return code


if __name__ == "__main__":
    sys.exit(main())
