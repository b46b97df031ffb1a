"""The shared catalog: tracks, albums, artists and credits, keyed by Spotify id where known and by
normalised names where not (provisional rows).

``name_key`` is the one normalisation every name-keyed lookup uses: NFKD, accents stripped,
case-folded, every run of punctuation or whitespace collapsed to one space. It deliberately keeps
words such as "Remastered" or "feat.": two names that differ in them may be different recordings,
and a wrong merge is worse than a provisional row that enrichment resolves later.
"""

from __future__ import annotations

import functools
import re
import unicodedata

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


@functools.lru_cache(maxsize=200_000)
def name_key(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(_NON_WORD.sub(" ", stripped).split())


def spotify_id_from_uri(uri: str | None, kind: str = "track") -> str | None:
    """``spotify:track:<id>`` -> ``<id>``; None for anything else."""
    if not uri:
        return None
    prefix = f"spotify:{kind}:"
    if not uri.startswith(prefix):
        return None
    ident = uri[len(prefix) :]
    return ident if ident.isalnum() else None
