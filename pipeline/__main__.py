"""``python -m pipeline <stage|command> ...``: one entry point for users.

The stages (what ``dvc.yaml`` runs as ``python -m pipeline.stages.<stage>``) and the commands
(:mod:`pipeline.commands`) each parse their own arguments; this only picks the module by name.
"""

import importlib
import sys
from collections.abc import Sequence

from pipeline.core import stage_cli
from pipeline.core.stage_cli import STAGES

COMMANDS = {
    "predict": "predict",
    "serve": "serve",
    "report": "report",
    "plots": "plots",
    "restore": "restore",
    "verify": "verify",
    "validate": "validate",
    "params-doc": "params_doc",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if name in STAGES:
        module = importlib.import_module(f"pipeline.stages.{name}")
        return stage_cli.run(name, module.main, rest)
    if name in COMMANDS:
        return importlib.import_module(f"pipeline.commands.{COMMANDS[name]}").main(rest)
    print(
        "usage: python -m pipeline {" + ",".join([*STAGES, *COMMANDS]) + "} ...\n\n"
        f"stages (dvc.yaml runs them): {', '.join(STAGES)}\n"
        f"commands: {', '.join(COMMANDS)}\n"
        "`python -m pipeline <name> --help` says more.",
        file=sys.stderr if name not in {"-h", "--help"} else sys.stdout,
    )
    return 0 if name in {"-h", "--help"} else 2


if __name__ == "__main__":
    sys.exit(main())
