"""``python -m tokenpool`` and the ``tokenpool`` console script: the command line (`tokenpool.cli.main`), imported
inside `main`, so that Ctrl-C while it loads or parses (before a command runs) is one line and exit 130, not a
traceback."""

import sys


def main() -> int:
    """Import the command line and run it; the console script's entry point (pyproject.toml)."""
    try:
        from .cli import main as run

        return run()
    except KeyboardInterrupt:  # (a command's own Ctrl-C is its `run_command`'s "tokenpool COMMAND: interrupted")
        print("tokenpool: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
