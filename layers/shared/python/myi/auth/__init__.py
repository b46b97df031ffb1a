"""Signing in with Spotify: PKCE and login state, sessions, the stored grant and its tokens."""
