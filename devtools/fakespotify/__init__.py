"""A fake Spotify (accounts service and Web API over HTTP) for tests and the local runtime."""

from devtools.fakespotify.server import FakeSpotify
from devtools.fakespotify.world import World, demo_world

__all__ = ["FakeSpotify", "World", "demo_world"]
