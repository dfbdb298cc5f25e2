"""``python -m trainer`` under torchrun, reporting on stderr how many DDP wrappers are still alive when the
process group is destroyed. Each wrapper's reducer holds the group: when the reducer is the last holder, its
destructor (run with the GIL held) joins gloo's worker threads, and a worker freeing a tensor that Python once
held waits for the GIL: a hang at exit, seen about once in ten runs."""

import gc
import json
import os
import sys

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainer.cli import main

destroy = dist.destroy_process_group


def destroy_and_report(*args, **kwargs):
    alive = sum(isinstance(thing, DistributedDataParallel) for thing in gc.get_objects())
    print(json.dumps({"rank": int(os.environ["RANK"]), "ddp_alive_at_destroy": alive}), file=sys.stderr)
    return destroy(*args, **kwargs)


dist.destroy_process_group = destroy_and_report
sys.exit(main(sys.argv[1:]))
