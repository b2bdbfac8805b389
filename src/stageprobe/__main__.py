"""`python -m stageprobe …` runs the command line; `torchrun … -m stageprobe extract …` scales it out."""

import sys

from stageprobe.cli import err_console, main
from stageprobe.errors import UserInputError
from stageprobe.features.distributed import init_distributed

# Under torchrun, join the process group and pin this rank's GPU before any command loads a
# model, so `--device auto` means cuda:LOCAL_RANK on every rank; a single process is unaffected.
try:
    init_distributed()
except UserInputError as error:
    err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    sys.exit(2)
main()
