"""The HTTP API of the single-page app (the ``api`` function): one resolver, a router per area."""
