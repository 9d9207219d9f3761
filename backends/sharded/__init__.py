"""Sharded Adam (ZeRO stage 1) across processes: ``ShardedAdam`` and its checkpoints
(``adam``), over a two-collective communicator with MPI and torch.distributed adapters
(``comm``). Importing this package imports neither mpi4py nor torch."""
from .adam import MANIFEST, ShardedAdam, load_adam, read_manifest, save_adam

__all__ = ["ShardedAdam", "save_adam", "load_adam", "read_manifest", "MANIFEST"]
