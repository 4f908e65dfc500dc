"""Schemathesis hooks for ``test_fuzz_http``: some path parameters are real ones.

Random handles and ids are nearly always 404; a share of the generated cases gets an
account or attachment id that exists (from ``FUZZ_HTTP_ACCOUNTS`` and
``FUZZ_HTTP_ATTACHMENT_IDS``), so the fuzzer reaches the code behind the lookups too.
Loaded by the schemathesis CLI through ``SCHEMATHESIS_HOOKS``.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

ACCOUNTS = [a for a in os.environ.get("FUZZ_HTTP_ACCOUNTS", "").split(",") if a]
ATTACHMENT_IDS = [int(i) for i in os.environ.get("FUZZ_HTTP_ATTACHMENT_IDS", "").split(",") if i]
KNOWN: dict[str, list[Any]] = {"account": ACCOUNTS, "attachment_id": ATTACHMENT_IDS}


def with_known_values(params: Any) -> st.SearchStrategy[Any]:
    if not isinstance(params, dict):
        return st.just(params)
    return st.fixed_dictionaries(
        {
            name: st.sampled_from(KNOWN[name]) if KNOWN.get(name) else st.just(value)
            for name, value in params.items()
        }
    )


@schemathesis.hook
def before_generate_path_parameters(context: Any, strategy: st.SearchStrategy) -> Any:
    return strategy | strategy.flatmap(with_known_values)
