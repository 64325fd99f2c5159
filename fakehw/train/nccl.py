"""What NCCL and PyTorch's process group print for a run, built from its plan.

``NCCL_DEBUG=INFO`` lines as NCCL 2.28 writes them (``tests/real/h200x2/load/
train.log`` is the reference): every local rank of the node prints its own set-up,
rank 0 prints each channel's ring over all ranks, every rank its trees and the
connections of every channel; the communicator's id and every choice come from the
run's seed (same seed, same bytes but for times and PIDs), and the init time grows
with the ranks. The watchdog's timeout line names the collective the step really
runs (``arithmetic.StepPerformance``), with its element counts.
"""

from __future__ import annotations

import random
import time

from fakehw.train.plan import RunPlan

NCCL_VERSION = "2.28.9+cuda13.0"
COMM_BASE = 0x3508FA60  # the first communicator's address, as the real log shows it
COMM_STRIDE = 0x1F00000
WATCHDOG_TIMEOUT_MS = 600_000  # ProcessGroupNCCL's default collective timeout
SETUP_COLLECTIVES = 6  # before the first step: a barrier, the model's broadcasts
# PyTorch's names for collectives in WorkNCCL (OpType=...)
OP_TYPES = {
    "AllReduce": "ALLREDUCE",
    "ReduceScatter": "_REDUCE_SCATTER_BASE",
    "AllGather": "_ALLGATHER_BASE",
    "AllToAll": "ALLTOALL_BASE",
    "SendRecv": "SEND",
}


def comm_id(plan: RunPlan) -> str:
    """The communicator's unique id: random in NCCL, from the seed here."""
    return f"0x{random.Random(f'nccl-{plan.seed}-{plan.run_name}').getrandbits(64):016x}"


def channels(plan: RunPlan) -> int:
    """Collective channels: 24 on NVSwitch baseboards (the real H200 log), fewer on PCIe."""
    return 24 if plan.gpu.nvlink_topology == "all" else 4


def ring(plan: RunPlan, channel: int) -> list[int]:
    """The ranks of one channel's ring: node by node, each node's GPUs in an order
    that turns with the channel, so that the channels spread over the links."""
    per_node = plan.gpus_per_node
    turn = channel % per_node
    order = [(local + turn) % per_node for local in range(per_node)]
    return [node * per_node + local for node in range(plan.nodes) for local in order]


def init_seconds(plan: RunPlan) -> dict[str, float]:
    """``Init timings``: bootstrap and graph search grow with the ranks and nodes
    (0.35 s for 2 ranks on one node, as the real log; seconds for hundreds)."""
    ranks, nodes = plan.gpus, plan.nodes
    parts = {
        "kernels": 0.29,
        "alloc": 0.01,
        "bootstrap": 0.0 if ranks <= plan.gpus_per_node else 0.02 * nodes**0.5 + 0.0015 * ranks,
        "allgathers": 0.0 if nodes == 1 else 0.002 * ranks,
        "topo": 0.03,
        "graphs": 0.0 if nodes == 1 else 0.01 * nodes,
        "connections": 0.01 * max(1, nodes),
        "rest": 0.0,
    }
    parts["total"] = sum(parts.values())
    return parts


def init_lines(
    plan: RunPlan, host: str, ip: str, pids: tuple[int, ...], node: int = 0
) -> list[str]:
    """What one node's ranks print while their communicator comes up, interleaved (the
    rings over all ranks: rank 0 only)."""
    rng = random.Random(f"nccl-lines-{plan.seed}")
    ranks, nodes, per_node = plan.gpus, plan.nodes, plan.gpus_per_node
    nchannels = channels(plan)
    cid = comm_id(plan)
    timings = init_seconds(plan)
    prefix = [f"{host}:{pid}:{pid} [{local}] NCCL INFO " for local, pid in enumerate(pids)]
    bus = [f"{n:x}" for n in plan.gpu.host.bus_numbers[:per_node]]
    # each rank's communicator lands where its allocator put it: near, not on, the
    # address of the real log
    base = COMM_BASE + rng.randrange(-64, 64) * 0x100000
    comm = [f"0x{base + COMM_STRIDE * local:x}" for local in range(per_node)]
    if nodes > 1:
        net = [
            "NET/Plugin: Loaded net plugin NCCL RDMA Plugin v10 (v10)",
            "NET/IB : Using "
            + " ".join(f"[{k}]mlx5_{k}:1/IB" for k in range(per_node))
            + f" [RO]; OOB eth0:{ip}<0>",
            "Initialized NET plugin IB",
            "Assigned NET plugin IB to comm",
            "Using network IB",
        ]
    else:
        net = [
            "NET/Plugin: Could not find: libnccl-net.so",
            "NET/IB : No device found.",
            f"NET/IB : Using [RO]; OOB eth0:{ip}<0>",
            "Failed to initialize NET plugin IB",
            f"NET/Socket : Using [0]eth0:{ip}<0>",
            "Initialized NET plugin Socket",
            "Assigned NET plugin Socket to comm",
            "Using network Socket",
        ]
    streams: list[list[str]] = []
    for local, p in enumerate(prefix):
        rank = node * per_node + local
        lines = [
            p + "ENV/Plugin: Could not find: libnccl-env.so",
            p + f"Bootstrap: Using eth0:{ip}<0>",
            p + "cudaDriverVersion 13000",
            p + f"NCCL version {NCCL_VERSION}",
            p + "Comm config Blocking set to 1",
            *(p + line for line in net),
            p + f"ncclCommInitRankConfig comm {comm[local]} rank {rank} nranks {ranks} cudaDev "
            f"{local} nvmlDev {local} busId {bus[local]}000 commId {cid} - Init START",
            p + f"comm {comm[local]} rank {rank} nRanks {ranks} nNodes {nodes} localRanks "
            f"{per_node} localRank {local} MNNVL 0",
        ]
        if rank == 0:
            lines += [
                p + f"Channel {c:02d}/{nchannels} : " + " ".join(map(str, ring(plan, c)))
                for c in range(nchannels)
            ]
        lines.append(p + "Trees " + " ".join(
            f"[{c}] {_tree(plan, rank, c)}" for c in range(nchannels)))  # fmt: skip
        lines += [
            p + "P2P Chunksize set to 524288",
            p + "Check P2P Type isAllDirectP2p 1 directMode 0 isAllCudaP2p 1",
            p + f"{nchannels} coll channels, {nchannels} collnet channels, 0 nvls channels, "
            "32 p2p channels, 32 p2p channels per peer",
            p + f"ncclCommInitRankConfig comm {comm[local]} rank {rank} nranks {ranks} cudaDev "
            f"{local} nvmlDev {local} busId {bus[local]}000 commId {cid} - Init COMPLETE",
            p + _init_timings(rank, ranks, timings, rng),
        ]
        lines += [p + _connection(plan, rank, c) for c in range(nchannels)]
        lines.append(p + f"Connected all rings, use ring PXN {int(nodes > 1)} GDR 1")
        streams.append(lines)
    return _interleave(streams, rng)


def _tree(plan: RunPlan, rank: int, channel: int) -> str:
    """One channel's tree as NCCL prints it: ``down0/down1/down2->rank->up`` (-1: none).
    A chain within the node; the nodes' first ranks form a binary tree across nodes."""
    per_node = plan.gpus_per_node
    node, local = divmod(rank, per_node)
    down = [rank + 1] if local + 1 < per_node else []
    up = rank - 1 if local > 0 else -1
    if local == 0 and plan.nodes > 1:
        children = [2 * node + 1, 2 * node + 2]
        down = [c * per_node for c in children if c < plan.nodes] + down
        up = ((node - 1) // 2) * per_node if node > 0 else -1
    if channel % 2:  # every other channel runs its tree the other way round
        down, up = [up] if up >= 0 else [], (down[0] if down else -1)
    shown = [*down, -1, -1, -1][:3]
    return f"{shown[0]}/{shown[1]}/{shown[2]}->{rank}->{up}"


def _connection(plan: RunPlan, rank: int, channel: int) -> str:
    """The send side of one channel: to the next GPU of the ring over NVLink (or PCIe),
    or out of the node over the GPU's own InfiniBand rail."""
    per_node = plan.gpus_per_node
    node, local = divmod(rank, per_node)
    turn = channel % per_node  # the ring's order within a node (see ring())
    position = (local - turn) % per_node
    if position + 1 < per_node:
        peer = node * per_node + (position + 1 + turn) % per_node
    else:  # on to the next node's first GPU of this ring
        peer = (node + 1) % plan.nodes * per_node + turn
    if peer // per_node == rank // per_node:
        via = "P2P/CUMEM" if plan.gpu.nvlink_topology == "all" else "P2P/direct pointer"
    else:
        via = f"NET/IB/{rank % per_node}/GDRDMA"
    ends = f"{rank}[{rank % per_node}] -> {peer}[{peer % per_node}]"
    return f"Channel {channel:02d}/0 : {ends} via {via}"


def _init_timings(rank: int, ranks: int, timings: dict[str, float], rng: random.Random) -> str:
    """One rank's ``Init timings`` line: the plan's figures, as each rank measures them
    (a few per cent apart; the total is their sum)."""
    parts = {k: v * rng.uniform(0.93, 1.07) for k, v in timings.items() if k != "total"}
    return (
        f"Init timings - ncclCommInitRankConfig: rank {rank} nranks {ranks} total "
        f"{sum(parts.values()):.2f} (" + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()) + ")"
    )


def _interleave(streams: list[list[str]], rng: random.Random) -> list[str]:
    """Lines of several processes as one log shows them: each in its own order, the
    processes taking turns unevenly (from the seed)."""
    out: list[str] = []
    cursors = [0] * len(streams)
    while any(cursor < len(lines) for cursor, lines in zip(cursors, streams, strict=True)):
        live = [k for k, lines in enumerate(streams) if cursors[k] < len(lines)]
        k = rng.choice(live)
        burst = rng.randint(1, 4)
        out += streams[k][cursors[k] : cursors[k] + burst]
        cursors[k] += burst
    return out


def _nanoseconds(rank: int) -> int:
    """The sub-second part of a rank's watchdog stamp (c10's log: nanoseconds): the
    ranks' watchdogs fire within a few milliseconds of each other, in no set order."""
    return (20_000_000 + rank * 7_919_731 % 9_000_000 + rank * 613) % 1_000_000_000


def seq_num(plan: RunPlan, step: int) -> int:
    """The sequence number of the collective a rank is in during ``step``: those of the
    set-up (a barrier and the first broadcasts), then every step's. FSDP gathers and
    scatters layer by layer, so each of its calls on the whole model is a call per layer."""
    per_step = 0
    for traffic in plan.performance.traffic:
        layered = plan.par.zero_stage >= 3 and traffic.purpose in ("parameters", "gradients")
        per_step += traffic.calls * (plan.model.arch.layers if layered else 1)
    return SETUP_COLLECTIVES + max(0, step) * per_step + 1


def watchdog_line(plan: RunPlan, rank: int, seq_num: int, when: float) -> str:
    """PyTorch's NCCL watchdog, for a rank stuck in the step's heaviest collective."""
    traffic = plan.performance.largest()
    op, numel_in, numel_out = "ALLREDUCE", 0, 0
    if traffic is not None:
        op = OP_TYPES.get(traffic.op, traffic.op.upper())
        numel = traffic.numel
        numel_in = numel_out = numel
        if traffic.op == "ReduceScatter":
            numel_out = numel // traffic.ranks
        elif traffic.op == "AllGather":
            numel_in = numel // traffic.ranks
    tag = time.strftime("%m%d %H:%M:%S", time.localtime(when))
    return (
        f"[rank{rank}]:[E{tag}.{_nanoseconds(rank):09d} ProcessGroupNCCL.cpp:685] [Rank {rank}] "
        f"Watchdog caught collective operation timeout: WorkNCCL(SeqNum={seq_num}, "
        f"OpType={op}, NumelIn={numel_in}, NumelOut={numel_out}, "
        f"Timeout(ms)={WATCHDOG_TIMEOUT_MS}) ran for {WATCHDOG_TIMEOUT_MS + 13} milliseconds "
        "before timing out."
    )
