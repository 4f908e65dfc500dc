"""Canonical names for a pair's room and the channel-layer groups. Pure: no I/O."""


def pair_room_key(user_a_id: int, user_b_id: int) -> str:
    """``dm.<lower id>.<higher id>``: the same two users always get the same room.

    Built from immutable ids, so renaming an account never splits a conversation.
    """
    if user_a_id == user_b_id:
        raise ValueError("a room needs two different users")
    low, high = sorted((int(user_a_id), int(user_b_id)))
    return f"dm.{low}.{high}"


def inbox_group(user_id: int) -> str:
    """The channel-layer group of one user's ``/ws/inbox/`` sockets."""
    return f"inbox.{int(user_id)}"


def presence_group(user_id: int) -> str:
    """Every socket of one user, for presence frames addressed to that user."""
    return f"user.{int(user_id)}"


def auth_group(user_id: int) -> str:
    """Every socket of one user, told when the user's credentials change or are revoked."""
    return f"auth.{int(user_id)}"
