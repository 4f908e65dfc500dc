"""The daphne patch of instamg/daphne_bodies.py holds on the installed daphne and Twisted:
an upgrade that moves what it patches fails here by name."""

from __future__ import annotations

from typing import Any

import pytest
from daphne.http_protocol import HTTPFactory
from twisted.internet.address import IPv4Address
from twisted.web import http

from instamg.daphne_bodies import leave_bodies_to_django


class Built(Exception):
    """Raised by the spy once Twisted's Request has its arguments."""


def test_daphne_builds_requests_that_leave_bodies_to_django(monkeypatch: Any) -> None:
    leave_bodies_to_django()
    leave_bodies_to_django()  # idempotent: one wrapper, not two
    seen: dict[str, Any] = {}

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Built

    monkeypatch.setattr(http.Request, "__init__", spy)
    protocol = HTTPFactory(server=None).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    with pytest.raises(Built):
        protocol.requestFactory(protocol)
    assert seen == {"parsePOSTFormSubmission": False}
