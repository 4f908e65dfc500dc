import json
import uuid

import pytest

from direct_messages.models import DirectMessage, Room, RoomMember, SendWindow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("send_path")]


def send(client, account, text="hi", client_id=None, **extra):
    body = {"client_id": client_id or str(uuid.uuid4()), "message": text, **extra}
    return client.post(
        f"/api/dm/{account}/messages", json.dumps(body), content_type="application/json"
    )


def test_first_message_creates_one_canonical_room(alice, bob, auth_client):
    response = send(auth_client(alice), "bob", "hello")
    assert response.status_code == 201
    message = response.json()
    lo, hi = sorted((alice.pk, bob.pk))
    assert message["room"] == f"dm.{lo}.{hi}" and message["seq"] == 1
    assert message["sender"] == "alice" and message["message"] == "hello"
    assert message["created_at"].endswith("Z") and len(message["created_at"]) == 27
    assert message["reactions"] == [] and message["attachments"] == [] and not message["unsent"]
    reply = send(auth_client(bob), "ALICE", "hey")
    assert reply.json()["room"] == message["room"] and reply.json()["seq"] == 2
    assert Room.objects.count() == 1 and RoomMember.objects.count() == 2


def test_retry_with_same_client_id_stores_one_message(alice, bob, auth_client):
    client_id = str(uuid.uuid4())
    first = send(auth_client(alice), "bob", "once", client_id)
    again = send(auth_client(alice), "bob", "once", client_id)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    assert DirectMessage.objects.count() == 1


def test_client_id_reused_for_another_conversation_is_invalid(alice, bob, make_user, auth_client):
    carol = make_user("carol")
    client_id = str(uuid.uuid4())
    send(auth_client(alice), "bob", "x", client_id)
    response = send(auth_client(alice), carol.account, "x", client_id)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_renaming_an_account_keeps_the_conversation(alice, bob, auth_client):
    room = send(auth_client(alice), "bob").json()["room"]
    bob.account = "robert"
    bob.save()
    again = send(auth_client(alice), "robert", "still you").json()
    assert again["room"] == room and again["seq"] == 2


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"client_id": "not-a-uuid", "message": "x"}, 400, "invalid"),
        ({"message": "x"}, 400, "invalid"),
        ({"client_id": str(uuid.uuid4()), "message": ""}, 400, "invalid"),
        ({"client_id": str(uuid.uuid4()), "message": "   "}, 400, "invalid"),
        ({"client_id": str(uuid.uuid4()), "message": "x" * 1001}, 400, "invalid"),
        ({"client_id": str(uuid.uuid4()), "message": 5}, 400, "invalid"),
        ({"client_id": str(uuid.uuid4()), "message": "x", "attachment_ids": "1"}, 400, "invalid"),
        ({"client_id": str(uuid.uuid4()), "message": "x", "attachment_ids": [999]}, 400, "invalid"),
        ({"client_id": str(uuid.uuid4()), "message": "x", "reply_to": 999}, 400, "invalid"),
    ],
)
def test_bad_sends_are_refused_and_store_nothing(alice, bob, auth_client, body, status, code):
    response = auth_client(alice).post(
        "/api/dm/bob/messages", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert not DirectMessage.objects.exists()


def test_text_of_exactly_1000_characters_is_accepted(alice, bob, auth_client):
    assert send(auth_client(alice), "bob", "é" * 1000).status_code == 201


def test_messaging_yourself_is_forbidden_and_unknown_is_404(alice, auth_client):
    assert send(auth_client(alice), "alice").json()["error"]["code"] == "forbidden"
    assert send(auth_client(alice), "nobody").status_code == 404
    assert send(auth_client(alice), "Not A Handle!").status_code == 404


def test_a_sender_field_in_the_payload_is_ignored(alice, bob, auth_client):
    response = send(auth_client(alice), "bob", "mine", sender="bob")
    assert response.json()["sender"] == "alice"
    assert DirectMessage.objects.get().sender == alice


def test_history_pages(alice, bob, auth_client):
    client = auth_client(alice)
    for i in range(1, 8):
        send(client, "bob", f"m{i}")
    newest = client.get("/api/dm/bob/messages?limit=3").json()
    assert [m["seq"] for m in newest["results"]] == [5, 6, 7] and newest["has_more"]
    older = client.get("/api/dm/bob/messages?limit=3&before=5").json()
    assert [m["seq"] for m in older["results"]] == [2, 3, 4] and older["has_more"]
    oldest = client.get("/api/dm/bob/messages?limit=3&before=2").json()
    assert [m["seq"] for m in oldest["results"]] == [1] and not oldest["has_more"]
    after = client.get("/api/dm/bob/messages?after=5").json()
    assert [m["seq"] for m in after["results"]] == [6, 7] and not after["has_more"]
    assert client.get("/api/dm/bob/messages?limit=0").json()["results"][0]["seq"] == 7
    assert client.get("/api/dm/bob/messages?limit=x").status_code == 400
    assert len(client.get("/api/dm/bob/messages?limit=5000").json()["results"]) == 7


def test_history_of_a_new_pair_is_empty(alice, bob, auth_client):
    body = auth_client(alice).get("/api/dm/bob/messages").json()
    assert body["results"] == [] and body["has_more"] is False and body["room"].startswith("dm.")


def test_inbox_sorted_by_activity_with_unread_counts(alice, bob, make_user, auth_client):
    carol = make_user("carol", name="Carol")
    send(auth_client(bob), "alice", "from bob 1")
    send(auth_client(bob), "alice", "from bob 2")
    send(auth_client(carol), "alice", "from carol")
    send(auth_client(alice), "carol", "reply to carol")
    inbox = auth_client(alice).get("/api/inbox").json()
    # bob's conversation is a request for alice (she never wrote to him)
    assert [c["with"]["account"] for c in inbox["results"]] == ["carol"]
    carol_row = inbox["results"][0]
    assert (
        carol_row["unread_count"] == 0 and carol_row["last_message"]["message"] == "reply to carol"
    )
    assert carol_row["request"] is False and carol_row["muted"] is False
    requests = auth_client(alice).get("/api/inbox?folder=requests").json()["results"]
    assert [(c["with"]["account"], c["unread_count"], c["request"]) for c in requests] == [
        ("bob", 2, True)
    ]
    bob_inbox = auth_client(bob).get("/api/inbox").json()["results"]
    assert bob_inbox[0]["with"]["account"] == "alice" and bob_inbox[0]["request"] is False


def test_inbox_keyset_pagination_is_stable_while_messages_arrive(make_user, auth_client):
    me = make_user("me")
    friends = [make_user(f"friend{i}") for i in range(5)]
    for friend in friends:
        send(auth_client(me), friend.account, "hi")
    client = auth_client(me)
    page1 = client.get("/api/inbox?limit=2").json()
    assert [c["with"]["account"] for c in page1["results"]] == ["friend4", "friend3"]
    send(auth_client(friends[0]), "me", "bump")  # friend0 moves to the top meanwhile
    page2 = client.get(f"/api/inbox?limit=2&cursor={page1['next_cursor']}").json()
    assert [c["with"]["account"] for c in page2["results"]] == ["friend2", "friend1"]
    assert page2["next_cursor"] is None  # friend0 moved to the top, not repeated here
    assert client.get("/api/inbox?cursor=garbage!").json()["error"]["code"] == "invalid"
    assert client.get("/api/inbox?folder=spam").status_code == 400


def test_inbox_pages_break_ties_by_id_and_seek_through_the_index(make_user, auth_client):
    """Conversations with the same activity time page by id, each once; and a later page
    is an index range from the cursor on, not a scan of every earlier row (it was on
    PostgreSQL: 1.6 times the first page's time 9,000 rows in, bench/RESULTS.md)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    me = make_user("me")
    for i in range(7):
        send(auth_client(me), make_user(f"tie{i}").account, "hi")
    RoomMember.objects.filter(user=me).update(last_activity_at=timezone.now())
    client = auth_client(me)
    seen, cursor = [], None
    with CaptureQueriesContext(connection) as queries:
        while True:
            page = client.get("/api/inbox?limit=3" + (f"&cursor={cursor}" if cursor else ""))
            seen += [c["with"]["account"] for c in page.json()["results"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
    assert sorted(seen) == [f"tie{i}" for i in range(7)] and len(seen) == 7
    by_id = RoomMember.objects.filter(user=me).order_by("-pk")
    assert seen == list(by_id.values_list("other__account", flat=True))

    paged = [q["sql"] for q in queries.captured_queries if "roommember" in q["sql"].lower()]
    sql = paged[-1]  # the last page's member query, with the cursor's condition
    with connection.cursor() as c:
        if connection.vendor == "postgresql":
            c.execute("SET LOCAL enable_seqscan = off")  # a few rows: force the index
            c.execute("EXPLAIN " + sql)
            conds = [r[0] for r in c.fetchall() if "Index Cond" in r[0]]
        else:
            c.execute("EXPLAIN QUERY PLAN " + sql)
            conds = [r[-1] for r in c.fetchall() if "member_inbox" in r[-1]]
    assert any("last_activity_at" in cond for cond in conds), conds


def test_read_moves_the_cursor_forward_only(alice, bob, auth_client):
    for i in range(3):
        send(auth_client(bob), "alice", f"m{i}")
    client = auth_client(alice)
    assert (
        client.post("/api/dm/bob/read", '{"seq": 2}', content_type="application/json").status_code
        == 204
    )
    member = RoomMember.objects.get(user=alice)
    assert (member.last_read_seq, member.unread_count) == (2, 1)
    client.post("/api/dm/bob/read", '{"seq": 1}', content_type="application/json")
    member.refresh_from_db()
    assert (member.last_read_seq, member.unread_count) == (2, 1)
    client.post("/api/dm/bob/read", '{"seq": 99}', content_type="application/json")
    member.refresh_from_db()
    assert (member.last_read_seq, member.unread_count) == (3, 0)
    bad = client.post("/api/dm/bob/read", '{"seq": "x"}', content_type="application/json")
    assert bad.status_code == 400


def test_a_third_user_cannot_reach_someone_elses_room(alice, bob, make_user, auth_client):
    send(auth_client(alice), "bob", "secret")
    mallory = auth_client(make_user("mallory"))
    # mallory can only ever address her own pair rooms: nothing of alice+bob leaks
    assert mallory.get("/api/dm/bob/messages").json()["results"] == []
    assert mallory.get("/api/inbox").json()["results"] == []
    mallory.post("/api/dm/bob/read", '{"seq": 1}', content_type="application/json")
    assert RoomMember.objects.get(user=bob).unread_count == 1


@pytest.mark.parametrize("conversations", [10, 1000])
def test_inbox_query_count_is_constant(
    make_user, auth_client, django_assert_max_num_queries, conversations
):
    from tests.factories import make_conversations

    me = make_user()
    make_conversations(me, conversations)
    client = auth_client(me)
    for limit in (1, 20, 200):
        with django_assert_max_num_queries(6):
            body = client.get(f"/api/inbox?limit={limit}").json()
        assert len(body["results"]) == min(limit, conversations)


@pytest.mark.parametrize("messages", [10, 1000])
def test_history_query_count_is_constant(
    make_user, auth_client, django_assert_max_num_queries, messages
):
    from tests.factories import make_conversations

    me = make_user()
    room = make_conversations(me, 1, messages_each=messages)[0]
    other = room.members.exclude(user=me).get().user if room.members.exists() else None
    partner = other or RoomMember.objects.get(room=room, user=me).other
    client = auth_client(me)
    for limit in (1, 50, 200):
        with django_assert_max_num_queries(7):
            body = client.get(f"/api/dm/{partner.account}/messages?limit={limit}").json()
        assert len(body["results"]) == min(limit, messages)


def _search_pages(client, url, django_assert_max_num_queries):
    found, cursor = [], None
    while True:
        with django_assert_max_num_queries(7):
            body = client.get(url + (f"&cursor={cursor}" if cursor else "")).json()
        found += body["results"]
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def test_search_pages_cover_every_match_once_newest_first(
    make_user, auth_client, django_assert_max_num_queries
):
    from tests.factories import make_conversations

    me = make_user()
    rooms = make_conversations(me, 3, messages_each=30)
    partner = RoomMember.objects.get(room=rooms[1], user=me).other
    client = auth_client(me)

    everywhere = _search_pages(
        client, "/api/search?q=message&limit=7", django_assert_max_num_queries
    )
    assert [m["id"] for m in everywhere] == list(
        DirectMessage.objects.filter(room__in=rooms).order_by("-pk").values_list("pk", flat=True)
    )
    in_room = _search_pages(
        client,
        f"/api/dm/{partner.account}/messages?q=message&limit=7",
        django_assert_max_num_queries,
    )
    assert [m["seq"] for m in in_room] == list(range(30, 0, -1))
    assert {m["room"] for m in in_room} == {rooms[1].key}


def test_sends_over_the_rate_limit_are_refused_with_retry_after(alice, bob, auth_client, settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "SEND_RATE_LIMIT": 5}
    client = auth_client(alice)
    retried = str(uuid.uuid4())
    assert send(client, "bob", "first", retried).status_code == 201
    for i in range(4):
        assert send(client, "bob", f"m{i}").status_code == 201
    refused = send(client, "bob", "one too many")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 10
    # retries of stored messages are answered (and do not count)
    assert send(client, "bob", "first", retried).status_code == 200
    assert DirectMessage.objects.count() == 5


def test_a_refused_first_send_leaves_no_conversation_in_either_inbox(alice, bob, auth_client):
    response = send(auth_client(alice), "bob", "x", attachment_ids=[424242])
    assert response.status_code == 400
    assert auth_client(alice).get("/api/inbox").json()["results"] == []
    assert auth_client(bob).get("/api/inbox?folder=requests").json()["results"] == []
    assert send(auth_client(alice), "bob", "now for real").json()["seq"] == 1
    assert len(auth_client(bob).get("/api/inbox?folder=requests").json()["results"]) == 1


def test_a_first_send_refused_before_storing_makes_no_room(alice, bob, auth_client):
    assert send(auth_client(alice), "bob", "x", reply_to=424242).status_code == 400
    auth_client(bob).post("/api/users/alice/block")
    assert send(auth_client(alice), "bob", "x").status_code == 403
    assert Room.objects.count() == 0 and DirectMessage.objects.count() == 0


def test_a_malformed_multipart_body_is_400_not_500(alice, auth_client):
    response = auth_client(alice).post(
        "/api/dm/bob/read",
        data=b'--xx\r\nContent-Disposition: form-data; name="seq"\r\n\r\n1\r\n',
        content_type="multipart/form-data; boundary=",
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize("cursor", ["x", "-1", "0", str(2**63), "9" * 40])
def test_a_bad_search_cursor_is_invalid_not_500(alice, auth_client, cursor):
    response = auth_client(alice).get(f"/api/search?q=hi&cursor={cursor}")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_a_send_is_one_transaction_and_keeps_every_counter(alice, bob, send_path):
    """The send is the hot path: lock, block check, rate window, insert, room,
    members, in one transaction through the ORM, or one statement on PostgreSQL. Both
    keep every counter and move the sender's rate window."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from direct_messages import services

    services.message_send(sender=alice, recipient=bob, client_id=uuid.uuid4(), text="one")
    services.message_send(sender=bob, recipient=alice, client_id=uuid.uuid4(), text="two")
    with CaptureQueriesContext(connection) as queries:
        result = services.message_send(
            sender=alice, recipient=bob, client_id=uuid.uuid4(), text="three"
        )
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    # First, whether the sender is still active (a socket's user was read at its handshake).
    assert statements[0] == "SELECT" and "is_active" not in queries.captured_queries[0]["sql"][:7]
    # Last, after commit: whether the recipient has a push subscription, i.e. whether a
    # notification is worth a task (docs/notifications.md).
    assert statements.pop() == "SELECT"
    assert "pushsubscription" in queries.captured_queries[-1]["sql"]
    if send_path == "statement":  # then one statement: no BEGIN, no COMMIT
        assert statements[1:] == ["WITH"]
    else:
        # The room and members, locked; the block check; the window, read and moved;
        # the message; the room; each member.
        expected = ["SELECT", "SELECT", "SELECT", "UPDATE", "INSERT", "UPDATE", "UPDATE"]
        expected += ["UPDATE"]
        # After commit, the sender's read receipts setting: they had unread, so the
        # other side may get a "seen" (read only when needed: the common send has none).
        assert statements[1:] == ["BEGIN", *expected, "COMMIT", "SELECT"]
    assert result.created and result.message.seq == 3
    stored = DirectMessage.objects.get(pk=result.message.pk)
    assert (stored.seq, stored.message, stored.client_id) == (3, "three", result.message.client_id)
    assert stored.created_at == result.message.created_at
    room = Room.objects.get()
    assert (room.last_seq, room.last_message_id) == (3, stored.pk)
    assert room.last_activity_at == stored.created_at
    mine, theirs = RoomMember.objects.get(user=alice), RoomMember.objects.get(user=bob)
    assert (mine.last_read_seq, mine.unread_count, mine.is_request) == (3, 0, False)
    # Bob answered, so his side is no request; he has read up to his own message.
    assert (theirs.last_read_seq, theirs.unread_count, theirs.is_request) == (2, 1, False)
    assert mine.visible and theirs.visible
    assert mine.last_activity_at == theirs.last_activity_at == stored.created_at
    assert result.payload["created_at"] == result.ack()["created_at"]
    # The rate windows hold the times of each sender's stored sends, oldest first.
    for user in (alice, bob):
        sent = DirectMessage.objects.filter(sender=user).order_by("seq")
        window = SendWindow.objects.get(user=user).recent
        assert window == pytest.approx([m.created_at.timestamp() for m in sent], abs=1e-4)


def test_every_user_has_a_rate_window_from_creation(make_user):
    """The send only reads and moves the window: the user's creation made it."""
    user = make_user()
    assert SendWindow.objects.get(user=user).recent == []


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_the_users_before_it_their_windows(make_user):
    from django.core.management import call_command

    before = [make_user(), make_user()]
    SendWindow.objects.all().delete()
    call_command("migrate", "direct_messages", "0007", verbosity=0)
    call_command("migrate", "direct_messages", "0008", verbosity=0)
    assert set(SendWindow.objects.values_list("user_id", flat=True)) == {u.pk for u in before}
    call_command("migrate", verbosity=0)


def test_a_user_without_a_rate_window_gets_one_on_first_send(alice, bob, settings):
    """Users inserted by ``bulk_create`` or raw SQL, which send no ``post_save``: the
    first send makes its sender's window, in the same transaction or statement, and the
    limit holds from there."""
    from direct_messages import services
    from direct_messages.errors import RateLimited

    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "SEND_RATE_LIMIT": 2}
    services.message_send(sender=alice, recipient=bob, client_id=uuid.uuid4(), text="one")
    SendWindow.objects.all().delete()
    services.message_send(sender=alice, recipient=bob, client_id=uuid.uuid4(), text="two")
    assert len(SendWindow.objects.get(user=alice).recent) == 1
    services.message_send(sender=alice, recipient=bob, client_id=uuid.uuid4(), text="three")
    with pytest.raises(RateLimited):
        services.message_send(sender=alice, recipient=bob, client_id=uuid.uuid4(), text="four")
    assert DirectMessage.objects.count() == 3


def test_message_sent_fires_once_per_stored_message_with_the_stored_rows(alice, bob):
    """Host projects hang push notifications on ``message_sent``: it gets the message as
    stored (a loaded instance, with its room, sender and reply), once, not for retries."""
    from direct_messages import services
    from direct_messages.signals import message_sent

    received = []

    def receiver(sender, message, **kwargs):
        received.append(message)

    message_sent.connect(receiver)
    try:
        client_id = uuid.uuid4()
        first = services.message_send(sender=alice, recipient=bob, client_id=client_id, text="a")
        services.message_send(sender=alice, recipient=bob, client_id=client_id, text="a")
        services.message_send(
            sender=bob, recipient=alice, client_id=uuid.uuid4(), text="b", reply_to=first.message.pk
        )
    finally:
        message_sent.disconnect(receiver)
    assert [m.message for m in received] == ["a", "b"]
    stored = DirectMessage.objects.get(message="b")
    reply = received[1]
    assert not reply._state.adding and reply.pk == stored.pk
    assert (reply.seq, reply.created_at, reply.client_id) == (
        2,
        stored.created_at,
        stored.client_id,
    )
    assert reply.sender == bob and reply.reply_to.pk == first.message.pk
    room = Room.objects.get()
    assert (reply.room.pk, reply.room.user_lo_id, reply.room.user_hi_id) == (
        room.pk,
        room.user_lo_id,
        room.user_hi_id,
    )
    assert reply.room.created_at == room.created_at  # not sent by the statement: read on demand
    assert reply.room.last_message_id == stored.pk and reply.room.last_seq == 2


def test_a_send_publishes_new_seen_and_both_inboxes_from_the_locked_rows(alice, bob):
    """The events come from the member rows the send statement read under the lock:
    a sender with unread messages has now seen them; each side's inbox gets its own
    unread count; a muted recipient's inbox gets nothing."""
    from direct_messages import services
    from direct_messages.realtime import collecting_events

    def send(sender, recipient, text):
        _, events = collecting_events(
            services.message_send,
            sender=sender,
            recipient=recipient,
            client_id=uuid.uuid4(),
            text=text,
        )
        return [(group.split(".")[0], event) for group, event in events]

    send(alice, bob, "one")
    events = send(bob, alice, "two")  # bob had one unread: answering means he saw it
    kinds = [event["type"] for _, event in events]
    assert kinds == ["message.new", "seen", "inbox.update", "inbox.update"]
    assert events[1][1]["account"] == "bob" and events[1][1]["seq"] == 2
    unread = {
        e["conversation"]["with"]["account"]: e["conversation"]["unread_count"]
        for _, e in events[2:]
    }
    assert unread == {"alice": 0, "bob": 1}  # bob's row (with alice): 0; alice's: 1
    assert all(e["conversation"]["last_message"]["seq"] == 2 for _, e in events[2:])
    RoomMember.objects.filter(user=alice).update(muted=True)
    events = send(bob, alice, "three")  # nothing unread for bob now; alice muted him
    assert [event["type"] for _, event in events] == ["message.new", "inbox.update"]
    assert events[1][1]["conversation"]["with"]["account"] == "alice"
    assert RoomMember.objects.get(user=alice).unread_count == 2
