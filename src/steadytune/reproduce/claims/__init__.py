"""The papers' claims, one module per paper; CLAIMS is the table's row order."""
from .base import Claim, ClaimData, Evidence
from .dodge import CLAIMS as DODGE
from .hao import CLAIMS as HAO
from .mosbach import CLAIMS as MOSBACH
from .zhang import CLAIMS as ZHANG

CLAIMS: dict[str, Claim] = {claim.key: claim for claim in (*DODGE, *ZHANG, *MOSBACH, *HAO)}
# The arms each claim reads; `plan` counts a claim's cost over them.
ARMS_OF: dict[str, tuple[str, ...]] = {
    **{claim.key: ("grid",) for claim in DODGE},
    "zhang-bertadam-failures": ("grid", "adamw"), "zhang-bertadam-scores": ("grid", "adamw"),
    "zhang-reinit-mean": ("adamw", "reinit"), "zhang-reinit-spread": ("adamw", "reinit"),
    "zhang-longer": ("adamw", "long"),
    "mosbach-optimization": ("grid", "adamw", "reinit", "long"), "mosbach-baseline-std": ("grid", "long"),
    "mosbach-baseline-failures": ("grid", "long"), "mosbach-generalization": ("grid",),
    "hao-flatter": ("pretrained", "scratch"), "hao-high-layers": ("pretrained",), "hao-surfaces-align": ("pretrained",),
}

__all__ = ["ARMS_OF", "CLAIMS", "Claim", "ClaimData", "Evidence"]
