"""The rescorer: touched accounts rescored in micro-batches into ``current_scores``;
everyone rescored daily, the midnight row appended to history.

Place in the flow: a background thread of ``service/`` over ``engine``; it takes the
accounts :meth:`ServiceState.touched` marked and holds the store only while it writes.
"""

from __future__ import annotations

from healthscore.service.state import ServiceState


class Rescorer:
    """The background rescoring of one running service."""

    def __init__(self, state: ServiceState):
        self.state = state

    def start(self) -> None:
        """Start the background thread."""

    def stop(self) -> None:
        """Stop it, finishing the micro-batch under way."""
