"""Spotify: the accounts service (OAuth with PKCE) and the Web API, over httpx.

Every failure becomes one of the errors of :mod:`myi.spotify.errors`; none of them ever carries a
token, a code or a verifier in its message.
"""
