"""``seedgrid-nightly``: the nightly regression gate on a SLURM cluster — tonight's grid as array
tasks, then a gate job (afterok) that collects it and runs ``seedgrid regress``. The work is
done by ``seedgrid/scripts/nightly.sh`` (its header says every option), run with this Python."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("scripts") / "nightly.sh"


def main() -> None:
    bash = shutil.which("bash")
    if bash is None:
        print("seedgrid-nightly: error: bash is not on PATH: run it on a SLURM login node",
              file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault("PYTHON", sys.executable)  # the gate runs the seedgrid installed here
    os.execv(bash, [bash, str(SCRIPT), *sys.argv[1:]])


if __name__ == "__main__":
    main()
