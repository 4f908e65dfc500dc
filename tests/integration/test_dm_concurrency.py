"""Races on the send path, with real threads and real database connections.

On PostgreSQL (CI's second run) the threads truly run in parallel transactions; on
SQLite they are serialised by IMMEDIATE transactions and the busy timeout.
"""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from direct_messages import services
from direct_messages.models import DirectMessage, Room, RoomMember, SendWindow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("send_path")]


def run_concurrently(calls):
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        finally:
            connection.close()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(run, c) for c in calls]]


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "SEND_RATE_LIMIT": 10_000}


def test_concurrent_first_messages_from_both_sides_make_one_room(alice, bob):
    results = run_concurrently(
        [
            lambda: services.message_send(
                sender=alice, account="bob", client_id=uuid.uuid4(), text="hi bob"
            ),
            lambda: services.message_send(
                sender=bob, account="alice", client_id=uuid.uuid4(), text="hi alice"
            ),
            lambda: services.message_send(
                sender=alice, account="bob", client_id=uuid.uuid4(), text="tab 2"
            ),
        ]
    )
    assert Room.objects.count() == 1 and RoomMember.objects.count() == 2
    assert sorted(r.message.seq for r in results) == [1, 2, 3]
    assert Room.objects.get().last_seq == 3


def test_twenty_concurrent_senders_get_gapless_seqs(alice, bob):
    calls = [
        (
            lambda s=sender, a=account, i=i: services.message_send(
                sender=s, account=a, client_id=uuid.uuid4(), text=f"m{i}"
            )
        )
        for i, (sender, account) in enumerate([(alice, "bob"), (bob, "alice")] * 10)
    ]
    results = run_concurrently(calls)
    seqs = sorted(r.message.seq for r in results)
    assert seqs == list(range(1, 21))
    assert list(DirectMessage.objects.order_by("seq").values_list("seq", flat=True)) == seqs
    room = Room.objects.get()
    assert room.last_seq == 20 and room.last_message.seq == 20
    unread = {m.user_id: m.unread_count for m in RoomMember.objects.all()}
    last = DirectMessage.objects.get(seq=20)
    # whoever sent last has read everything; the other's unread count matches the tail
    assert unread[last.sender_id] == 0
    assert unread[bob.pk if last.sender_id == alice.pk else alice.pk] >= 1


def test_concurrent_retries_of_one_client_id_store_one_message(alice, bob):
    client_id = uuid.uuid4()
    results = run_concurrently(
        [
            lambda: services.message_send(
                sender=alice, account="bob", client_id=client_id, text="once"
            )
        ]
        * 6
    )
    assert len({r.message.pk for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert DirectMessage.objects.count() == 1


def test_concurrent_sends_never_exceed_the_rate_limit(alice, bob, settings):
    """The window is checked and taken in one step: 12 sends racing for 5 places get 5."""
    from direct_messages.errors import RateLimited

    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "SEND_RATE_LIMIT": 5}

    def send(i):
        def call():
            try:
                return services.message_send(
                    sender=alice, account="bob", client_id=uuid.uuid4(), text=f"race {i}"
                )
            except RateLimited:
                return None

        return call

    results = run_concurrently([send(i) for i in range(12)])
    assert sum(r is not None for r in results) == 5
    assert DirectMessage.objects.count() == 5


def test_concurrent_sends_to_many_people_never_exceed_the_rate_limit(alice, make_user, settings):
    """The window is the user's, not the room's: 12 first messages to 12 people, racing
    (each creating its room, the first creating the window), get 5 places."""
    from direct_messages.errors import RateLimited

    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "SEND_RATE_LIMIT": 5}
    people = [make_user() for _ in range(12)]

    def send(person):
        def call():
            try:
                return services.message_send(
                    sender=alice, recipient=person, client_id=uuid.uuid4(), text="hi"
                )
            except RateLimited:
                return None

        return call

    results = run_concurrently([send(p) for p in people])
    assert sum(r is not None for r in results) == 5
    assert DirectMessage.objects.count() == 5


def test_the_window_slides(alice, bob, settings):
    """Places come back one by one as the sends that took them leave the window."""
    import time

    from direct_messages.errors import RateLimited

    settings.DIRECT_MESSAGES = {
        **settings.DIRECT_MESSAGES,
        "SEND_RATE_LIMIT": 2,
        "SEND_RATE_WINDOW_SECONDS": 1,
    }

    def send():
        return services.message_send(sender=alice, account="bob", client_id=uuid.uuid4(), text="x")

    send()
    time.sleep(0.5)
    send()
    with pytest.raises(RateLimited) as refused:
        send()
    assert refused.value.retry_after == 1
    time.sleep(0.6)  # the first send left the window, the second has not
    send()
    with pytest.raises(RateLimited):
        send()
    assert DirectMessage.objects.count() == 3
    # The window row keeps no more than the limit needs.
    assert len(SendWindow.objects.get(user=alice).recent) == 2


def test_a_lower_limit_applies_to_a_window_filled_under_a_higher_one(alice, bob, settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "SEND_RATE_LIMIT": 4}
    for _ in range(4):
        services.message_send(sender=alice, account="bob", client_id=uuid.uuid4(), text="x")
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "SEND_RATE_LIMIT": 2}
    from direct_messages.errors import RateLimited

    with pytest.raises(RateLimited):
        services.message_send(sender=alice, account="bob", client_id=uuid.uuid4(), text="y")
    assert DirectMessage.objects.count() == 4


def test_a_refused_send_gives_its_rate_limit_place_back(alice, bob, settings):
    from direct_messages.errors import Invalid, RateLimited

    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "SEND_RATE_LIMIT": 2}
    first = uuid.uuid4()
    services.message_send(sender=alice, account="bob", client_id=first, text="one")
    for _ in range(3):  # retries of a stored message: answered, and they must not count
        again = services.message_send(sender=alice, account="bob", client_id=first, text="one")
        assert not again.created
    for _ in range(3):  # refused inside the transaction: they must not count
        with pytest.raises(Invalid):
            services.message_send(
                sender=alice, account="bob", client_id=uuid.uuid4(), text="x", reply_to=10**9
            )
    services.message_send(sender=alice, account="bob", client_id=uuid.uuid4(), text="two")
    with pytest.raises(RateLimited):
        services.message_send(sender=alice, account="bob", client_id=uuid.uuid4(), text="three")
