"""What a token does in one decoder layer.

ACTIVE   query, key/value and FFN: the ordinary forward pass.
INJECT   key/value only, computed at every layer from the layer-0 embeddings through this
         layer's input norm and image projections; no query, no FFN, the hidden state is
         never updated (HiMix, PAPER.md section 2).
BYPASS   no query, no key/value, no FFN; the hidden state passes through unchanged
         (an HMGen shallow layer, section 3).
DROPPED  gone from this layer on (after FastV or PyramidDrop selection, or random drop).

BYPASS and DROPPED compute the same thing in a layer; they are kept apart because BYPASS
is temporary (the token comes back in the next full layer) and DROPPED is final.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Role", "ROLE_NAMES"]


class Role(IntEnum):
    ACTIVE = 0
    INJECT = 1
    BYPASS = 2
    DROPPED = 3


ROLE_NAMES = tuple(r.name.lower() for r in Role)
