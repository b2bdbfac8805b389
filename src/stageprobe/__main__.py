"""`python -m stageprobe …` runs the command line; `torchrun … -m stageprobe extract …` scales it out."""

import os
import sys

from stageprobe.cli import err_console, main
from stageprobe.errors import UserInputError

# Under torchrun, join the process group and pin this rank's GPU before any command loads a
# model, so `--device auto` means cuda:LOCAL_RANK on every rank. A single process (no WORLD_SIZE)
# skips it, and with it the torch import, so `--help` stays fast.
if "WORLD_SIZE" in os.environ:
    from stageprobe.features.distributed import init_distributed

    try:
        init_distributed()
    except UserInputError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
main()
