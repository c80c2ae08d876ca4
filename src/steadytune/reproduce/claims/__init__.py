"""The papers' claims, one module per paper; CLAIMS is the table's row order."""
from .base import Claim, ClaimData, Evidence
from .dodge import CLAIMS as DODGE
from .hao import CLAIMS as HAO
from .mosbach import CLAIMS as MOSBACH
from .zhang import CLAIMS as ZHANG

CLAIMS: dict[str, Claim] = {claim.key: claim for claim in (*DODGE, *ZHANG, *MOSBACH, *HAO)}

__all__ = ["CLAIMS", "Claim", "ClaimData", "Evidence"]
