"""torchrun: the process group, and recognising a restart after a lost worker.

torchrun (`--max-restarts K`) restarts the whole group when a worker dies.
Its agent keeps one key-value store for all restarts (the "shared TCPStore" of
its c10d rendezvous), and the process group's bootstrap keys (each rank's
address) from the dead group are still in it: read by the new group, they make
gloo and NCCL wait for peers that no longer exist, for the whole 30-minute
timeout. TORCHELASTIC_RESTART_COUNT cannot name the attempt either: each node's
agent counts its own restarts, so nodes disagree. So the group starts in a
namespace that its rank 0 makes up and hands to every rank (`fresh_namespace`).
"""
import datetime
import os
import time
import uuid

import torch

# How long ranks wait for each other while they start.
START_TIMEOUT = datetime.timedelta(minutes=10)


def dist_setup():
    """(rank, world size, local rank), starting the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    store, _, _ = next(torch.distributed.rendezvous("env://", rank, world, timeout=START_TIMEOUT))
    store = torch.distributed.PrefixStore(fresh_namespace(store, rank, world), store)
    torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world)
    return rank, world, local


def fresh_namespace(store, rank, world, timeout=START_TIMEOUT.total_seconds()):
    """A store prefix that this group's ranks share and no earlier group used.

    Rank r > 0 writes a new random token under "gan/hello/r" and waits for the
    answer filed under that token, which only a live rank 0 can write. Rank 0
    answers every token it sees (a stale one from a dead group is answered
    too, harmlessly) until each rank has acknowledged in the new namespace."""
    if rank != 0:
        token = uuid.uuid4().hex
        store.set(f"gan/hello/{rank}", token)
        namespace = store.get(f"gan/reply/{token}").decode()   # waits up to the store's timeout
        store.set(f"{namespace}/ack/{rank}", "1")
        return namespace
    namespace = f"gan/group-{uuid.uuid4().hex}"
    acks, answered, deadline = [f"{namespace}/ack/{r}" for r in range(1, world)], set(), time.time() + timeout
    while not store.check(acks):
        for r in range(1, world):
            if store.check([f"gan/hello/{r}"]):
                token = store.get(f"gan/hello/{r}").decode()
                if token not in answered:
                    store.set(f"gan/reply/{token}", namespace)
                    answered.add(token)
        if time.time() > deadline:
            raise TimeoutError(f"torchrun: not every rank started within {timeout:.0f} s")
        time.sleep(0.02)
    return namespace


def elastic_restart():
    """How many times torchrun has restarted this node's workers (0: the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def any_rank(flag, world, device):
    """True on every rank when `flag` is true on any (after dist_setup)."""
    if world == 1:
        return bool(flag)
    t = torch.tensor([float(bool(flag))], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())
