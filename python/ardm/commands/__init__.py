"""Subcommands of the ``ardm`` CLI.

Each module here exposes ``add_parser(subparsers) -> argparse.ArgumentParser`` (registering its
subcommand and options) and ``run(args) -> int`` (the exit status). ``ardm.cli.COMMANDS`` lists
the modules in the order ``--help`` shows them.
"""
