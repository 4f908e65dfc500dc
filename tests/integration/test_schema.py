"""The schema the send path writes to: what each send costs in index entries, and that
the columns left without a constraint (migration 0006) still hold together."""

import uuid

import pytest
from django.db import connection, transaction
from django.db.models import Q

from direct_messages import selectors, services
from direct_messages.models import DirectMessage, Room, RoomMember
from direct_messages.schemas import inbox_page_out

pytestmark = pytest.mark.django_db(transaction=True)

SEND_TABLES = [Room, RoomMember, DirectMessage]


def send(sender, recipient, text="hi", **extra):
    return services.message_send(
        sender=sender, recipient=recipient, client_id=uuid.uuid4(), text=text, **extra
    ).message


def _indexes(model):
    """(name, columns, partial) of every index on ``model``'s table, unique ones too."""
    partial = {index.name for index in model._meta.indexes if index.condition is not None}
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return [
        (name, tuple(info["columns"]), name in partial)
        for name, info in found.items()
        if info["index"] or info["unique"] or info["primary_key"]
    ]


@pytest.mark.parametrize("model", SEND_TABLES, ids=lambda m: m.__name__)
def test_no_index_on_the_send_tables_is_covered_by_another(model):
    """Every send writes an entry in each index of these tables: an index whose columns
    lead another (full, not partial) index is written for nothing."""
    indexes = _indexes(model)
    for name, columns, _ in indexes:
        covering = [
            other
            for other, other_columns, partial in indexes
            if other != name
            and not partial
            and len(other_columns) > len(columns)
            and other_columns[: len(columns)] == columns
        ]
        assert not covering, f"{name} {columns} is covered by {covering}"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="HOT updates are PostgreSQL's")
def test_a_send_updates_its_room_without_new_index_entries(alice, bob):
    """None of the room columns a send changes is indexed, so PostgreSQL updates the
    room row in place on its page (a HOT update) instead of writing an entry in each of
    the room's indexes. pg_stat_xact_* counts this transaction's own updates."""
    send(alice, bob, "first")  # creates the room
    with transaction.atomic(), connection.cursor() as cursor:
        for text in ("one", "two", "three"):
            send(alice, bob, text)
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = %s::regclass",
            [Room._meta.db_table],
        )
        updates, hot = cursor.fetchone()
        assert updates >= 3 and hot == updates


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"
)
def test_the_send_statement_is_prepared_once_per_connection(alice, bob, settings):
    """The project binds parameters on the server and lets psycopg prepare a query it
    has run a few times on a connection (settings.py): after some sends the send's
    statement is one of this session's prepared statements, planned once rather than
    per send. Without the two options nothing is prepared and this fails."""
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "SEND_STATEMENT": True}
    for n in range(8):
        send(alice, bob, f"message {n}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
        prepared = [row[0] for row in cursor.fetchall()]
    insert = f"INSERT INTO {connection.ops.quote_name(DirectMessage._meta.db_table)}"
    assert any(insert in statement for statement in prepared), prepared


def test_deleting_a_user_leaves_nothing_pointing_at_them(alice, bob, make_user):
    """The other user's member row has no constraint of its own, nor does the room's
    last message: deleting a user (erasure.py) leaves nothing pointing at them, the other
    side's conversation stays, and the constraints hold at commit."""
    carol = make_user("carol")
    alice_id = alice.pk
    first = send(alice, bob, "hello bob")
    send(bob, alice, "hi alice", reply_to=first.pk)
    send(bob, carol, "hello carol")
    send(carol, bob, "hi bob")

    alice.delete()
    connection.check_constraints()

    assert not RoomMember.objects.filter(Q(user_id=alice_id) | Q(other_id=alice_id)).exists()
    assert not DirectMessage.objects.filter(sender_id=alice_id).exists()
    assert not Room.objects.filter(Q(user_lo_id=alice_id) | Q(user_hi_id=alice_id)).exists()
    inbox = inbox_page_out(selectors.inbox_list(user=bob))["results"]
    assert [(c["with"]["account"], c["last_message"]["message"]) for c in inbox] == [
        ("carol", "hi bob"),
        (None, "hi alice"),
    ]


def test_a_last_message_deleted_on_its_own_reads_as_none(alice, bob, auth_client):
    """Only an administrator deletes a message without its room; the room's pointer to
    it then dangles, and the inbox shows the conversation without a last message."""
    send(alice, bob, "one")
    last = send(alice, bob, "two")
    DirectMessage.objects.filter(pk=last.pk).delete()
    connection.check_constraints()

    response = auth_client(alice).get("/api/inbox")
    assert response.status_code == 200
    [conversation] = response.json()["results"]
    assert conversation["with"]["account"] == "bob" and conversation["last_message"] is None
    assert send(alice, bob, "three").seq == 3
    [conversation] = auth_client(bob).get("/api/inbox?folder=requests").json()["results"]
    assert conversation["last_message"]["message"] == "three"
