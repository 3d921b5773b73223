"""Train one cell and record which training examples each update used (on every process).

    python tests/helpers/record_cell.py CONFIG WI DO OUT_PREFIX
    torchrun --nproc-per-node 2 tests/helpers/record_cell.py CONFIG WI DO OUT_PREFIX

Writes OUT_PREFIX.json ({update: sorted example positions, gathered from all processes}) and
OUT_PREFIX.nc (the shard) from the main process.
"""

import json
import sys

import numpy as np
import torch.distributed as dist

from seedgrid.config import load_config
from seedgrid.store import write_atomic
from seedgrid.trainer import train_cell

config, wi, do, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seen: dict[int, list[int]] = {}
shard = train_cell(load_config(config), wi, do,
                   on_update=lambda u, idx: seen.setdefault(u, []).extend(map(int, idx)))
if dist.is_available() and dist.is_initialized():
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, seen)
    dist.barrier()
    dist.destroy_process_group()  # a live gloo group at exit can abort the process
else:
    parts = [seen]
if shard is not None:
    merged = {u: sorted(sum((p[u] for p in parts), [])) for u in seen}
    with open(out + ".json", "w") as f:
        json.dump({str(u): v for u, v in merged.items()}, f)
    write_atomic(shard, out + ".nc")
    print("processes", shard.attrs["num_processes"], "updates", len(merged),
          "examples", int(np.sum([len(v) for v in merged.values()])))
