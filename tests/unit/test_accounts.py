import pytest

from direct_messages.rooms import inbox_group, pair_room_key
from users.accounts import is_valid_account, normalize_account


@pytest.mark.parametrize(
    "account", ["a", "alice", "a.b", "a_b", "_a_", "a1.b2_c3", "x" * 30, "9", "a._b"]
)
def test_valid_accounts(account):
    assert is_valid_account(account)


@pytest.mark.parametrize(
    "account",
    ["", ".a", "a.", "a..b", "x" * 31, "Alice", "a-b", "a b", "ä", "a/b", "a@b", "<script>"],
)
def test_invalid_accounts(account):
    assert not is_valid_account(account)


def test_accounts_fold_to_lower_case():
    assert normalize_account("  Alice.Smith ") == "alice.smith"


def test_pair_room_key_is_symmetric_and_ordered():
    assert pair_room_key(7, 3) == pair_room_key(3, 7) == "dm.3.7"
    assert pair_room_key(10, 9) == "dm.9.10"  # numeric, not lexical, order


def test_pair_room_key_refuses_one_user():
    with pytest.raises(ValueError):
        pair_room_key(4, 4)


def test_group_names_are_valid_channel_group_names():
    from channels.layers import BaseChannelLayer

    layer = BaseChannelLayer()
    assert layer.require_valid_group_name(pair_room_key(1, 2))
    assert layer.require_valid_group_name(inbox_group(1))
