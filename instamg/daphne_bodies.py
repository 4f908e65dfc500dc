"""The one place the demo host reaches into another package's internals: daphne's
``WebRequest``, so that Twisted leaves request bodies to Django.

Twisted's ``Request`` decodes every multipart POST into ``request.args``, which daphne
never reads: a second parse and copies of every upload in the server's memory. A
24 MB upload raises daphne's peak memory by about 325 MB with Twisted's parse and by
29 MB without it (``pytest -s -k upload_is_parsed_once tests/reliability`` prints it).
A body Twisted cannot parse is answered with a bare ``400`` and no JSON before the
application sees it, instead of the API's error. Django parses the body, with the API's limits and
errors; that is the only parse we want.

Twisted's switch for it, ``Request(parsePOSTFormSubmission=False)``, is public and
documented; daphne has no option to pass it, and builds its ``WebRequest`` (a
subclass of Twisted's ``Request``) in ``HTTPFactory.buildProtocol``. Neither has a
public hook, so this wraps ``WebRequest.__init__``. An upgrade that moves either
raises :class:`DaphneChanged` at import instead of silently parsing twice;
``tests/unit/test_daphne_bodies.py`` checks the chain from daphne's factory to
Twisted's argument, and two live tests in ``tests/reliability/test_fuzz_http.py`` the
behaviour (memory, and the JSON error).

Served by another ASGI server (uvicorn in the scaled deployment), this does nothing.
"""

from __future__ import annotations

import inspect
from typing import Any


class DaphneChanged(RuntimeError):
    """daphne or Twisted no longer has what :func:`leave_bodies_to_django` patches."""


def leave_bodies_to_django() -> None:
    """Make every daphne request leave its body unparsed (idempotent)."""
    try:
        from daphne.http_protocol import HTTPFactory, WebRequest
    except ImportError:  # daphne is not installed: nothing to do
        return
    from twisted.web.http import Request

    if getattr(WebRequest, "bodies_left_to_django", False):
        return
    if not issubclass(WebRequest, Request) or not hasattr(HTTPFactory, "buildProtocol"):
        raise DaphneChanged("daphne.http_protocol.WebRequest is no longer Twisted's Request")
    if "parsePOSTFormSubmission" not in inspect.signature(Request.__init__).parameters:
        raise DaphneChanged("twisted.web.http.Request lost parsePOSTFormSubmission")
    init = WebRequest.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        init(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    WebRequest.bodies_left_to_django = True
