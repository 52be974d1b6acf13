"""Export the user tower for serving: torch.export (.pt2) with a dynamic batch dimension."""
from __future__ import annotations

from pathlib import Path

import torch

from mer.stages.model.data import USER_INPUTS
from mer.stages.model.item_tower import TowerConfig

EXPORT_FILE = "user_tower.pt2"


def example_inputs(c: TowerConfig, batch: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    L = c.history_len
    mask = torch.ones(batch, L, dtype=torch.bool)
    mask[0, : L // 2] = False
    return (torch.randn(batch, L, c.pre_dim, generator=g), torch.zeros(batch, L),
            torch.randint(0, c.cat_buckets + 1, (batch, L), generator=g),
            torch.randint(0, c.creator_buckets + 1, (batch, L), generator=g),
            torch.randint(0, c.n_topics + 1, (batch, L), generator=g),
            torch.randint(-1, 1 << 20, (batch, L), generator=g), mask,
            torch.rand(batch, L, generator=g) > 0.2, torch.randint(0, c.n_topics + 1, (batch,), generator=g))


def export_user_tower(user: torch.nn.Module, c: TowerConfig, folder: Path) -> Path:
    user.eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    dyn = tuple({0: batch} for _ in USER_INPUTS)
    with torch.no_grad():
        ep = torch.export.export(user, example_inputs(c), dynamic_shapes=dyn)
    path = Path(folder) / EXPORT_FILE
    torch.export.save(ep, str(path))
    return path


def load_user_tower(folder: Path):
    """The exported user tower. torch.export archives hold no pickles to run; anything else is refused
    with a message naming the file."""
    from mer.base.errors import ContractError

    path = Path(folder) / EXPORT_FILE
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:
        raise ContractError(f"{path} is not a torch.export archive ({type(exc).__name__}); not loaded") from None
