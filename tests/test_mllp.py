"""The MLLP listener (gateway/mllp/server.py) over real sockets on 127.0.0.1, with a stub handler
that answers a fake ACK carrying the message's MSH-10. Waits are on conditions with deadlines."""
from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.mllp.client import MllpClient
from gateway.mllp.framing import frame
from mllp_support import (NAME, PATIENCE, PNR, EchoAck, ack, acked, connect, control_id, message, read_replies,
                          read_to_eof, serving, until)


# -- order, volume, concurrency ----------------------------------------------------------------
async def test_several_messages_on_one_connection_are_answered_in_order():
    handler = EchoAck()
    async with serving(handler) as server, MllpClient(*server.address, timeout=PATIENCE) as client:
        replies = [await client.send(message(f"M{i}")) for i in range(5)]
    assert [acked(r) for r in replies] == [("AA", f"M{i}") for i in range(5)]
    assert [control_id(m) for m in handler.seen] == [f"M{i}" for i in range(5)]


async def test_a_thousand_messages_on_one_connection_are_all_acked_in_order():
    handler = EchoAck()
    async with serving(handler) as server, MllpClient(*server.address, timeout=PATIENCE) as client:
        replies = [await client.send(message(f"N{i}")) for i in range(1000)]
    assert [acked(r) for r in replies] == [("AA", f"N{i}") for i in range(1000)]
    assert server.stats.messages == 1000 and server.stats.connections_accepted == 1


async def test_pipelined_frames_are_handled_one_at_a_time_each_after_the_previous_reply():
    class Yielding(EchoAck):
        async def work(self, message: bytes) -> None:
            await asyncio.sleep(0)  # give the loop a chance to start the next frame, if it would

    handler = Yielding()
    async with serving(handler) as server, MllpClient(*server.address, timeout=PATIENCE) as client:
        replies = await client.send_many(message(f"P{i}") for i in range(1000))
    assert [acked(r)[1] for r in replies] == [f"P{i}" for i in range(1000)]
    assert [control_id(m) for m in handler.seen] == [f"P{i}" for i in range(1000)]
    assert handler.most_active == 1


async def test_twenty_connections_are_served_at_once_each_in_its_own_order():
    first_messages = asyncio.Event()

    class Barrier(EchoAck):
        async def work(self, message: bytes) -> None:  # the first message of each connection waits for all 20
            if control_id(message).endswith("-0") and not first_messages.is_set():
                if self.active == 20:
                    first_messages.set()
                await first_messages.wait()

    handler = Barrier()
    async with serving(handler) as server:
        async def sender(n: int) -> list[str]:
            async with MllpClient(*server.address, timeout=PATIENCE) as client:
                return [acked(await client.send(message(f"C{n}-{i}")))[1] for i in range(25)]

        results = await asyncio.wait_for(asyncio.gather(*(sender(n) for n in range(20))), PATIENCE)
    assert handler.most_active == 20  # all twenty first messages were in the handler together
    assert results == [[f"C{n}-{i}" for i in range(25)] for n in range(20)]


async def test_a_sender_that_half_closes_after_its_frames_still_gets_every_ack():
    async with serving(EchoAck()) as server:  # as `cat messages | nc host 2575` does
        reader, writer = await connect(server)
        writer.write(b"".join(frame(message(f"H{i}")) for i in range(3)))
        writer.write_eof()
        received = await read_to_eof(reader)
        writer.close()
    assert received == b"".join(frame(ack(f"H{i}")) for i in range(3))


async def test_time_spent_in_the_handler_does_not_count_as_idle():
    class Slow(EchoAck):
        async def work(self, message: bytes) -> None:
            await asyncio.sleep(1.5)  # the handler's pace, longer than the idle timeout

    async with serving(Slow(), idle_timeout=1.0) as server, MllpClient(*server.address, timeout=PATIENCE) as client:
        assert acked(await client.send(message("LONG"))) == ("AA", "LONG")
    assert server.stats.idle_closed == 0


# -- what arrives broken -----------------------------------------------------------------------
async def test_a_client_that_disconnects_mid_frame_leaves_nothing_handled_and_the_listener_serves_on():
    handler = EchoAck()
    async with serving(handler) as server:
        reader, writer = await connect(server)
        writer.write(b"\x0b" + message("HALF")[:40])
        await writer.drain()
        writer.close()
        await until(lambda: server.stats.partial_frames_dropped == 1, "the partial frame was not dropped")
        async with MllpClient(*server.address, timeout=PATIENCE) as client:
            assert acked(await client.send(message("AFTER"))) == ("AA", "AFTER")
    assert [control_id(m) for m in handler.seen] == ["AFTER"]
    assert handler.refused == []


async def test_bytes_before_a_start_block_are_skipped_and_counted():
    handler = EchoAck()
    async with serving(handler) as server:
        reader, writer = await connect(server)
        writer.write(b"\x00garbage\r\n" + frame(message("G1")) + b"\r\n" + frame(message("G2")))
        replies = await read_replies(reader, 2)
        writer.close()
        await until(lambda: server.open_connections == 0, "the connection was not closed")
    assert [acked(r) for r in replies] == [("AA", "G1"), ("AA", "G2")]
    assert server.stats.bytes_skipped == len(b"\x00garbage\r\n") + 2


async def test_a_frame_over_the_size_limit_gets_the_refusal_and_its_connection_is_closed():
    handler = EchoAck()
    async with serving(handler, max_message_bytes=1000) as server:
        reader, writer = await connect(server)
        writer.write(b"\x0b" + message("BIG", padding=5000))  # and no end block: it never ends
        received = await read_to_eof(reader)
        writer.close()
    [(partial, reason)] = handler.refused
    assert len(partial) == 1000 and control_id(partial) == "BIG" and "1000 bytes" in reason
    assert received == frame(handler.refuse(partial, reason))
    assert acked(received[1:-2]) == ("AR", "BIG")
    assert handler.seen == [] and server.stats.oversize_refused == 1 and server.stats.partial_frames_dropped == 0


async def test_a_complete_frame_over_the_limit_is_refused_and_one_of_the_limit_is_handled():
    handler = EchoAck()
    fits = message("FITS")
    async with serving(handler, max_message_bytes=len(fits)) as server:
        async with MllpClient(*server.address, timeout=PATIENCE) as client:
            assert acked(await client.send(fits)) == ("AA", "FITS")
        reader, writer = await connect(server)
        writer.write(frame(message("OVER", padding=10)) + frame(message("BEHIND")))
        received = await read_to_eof(reader)
        writer.close()
    assert acked(received[1:-2]) == ("AR", "OVER")
    assert [control_id(m) for m in handler.seen] == ["FITS"]  # nothing behind the refused frame is handled


async def test_an_idle_connection_is_closed_after_the_idle_timeout_and_logged_without_content(caplog):
    caplog.set_level(logging.INFO, logger="gateway.mllp")
    async with serving(EchoAck(), idle_timeout=0.3) as server:
        reader, writer = await connect(server)
        peer = "%s:%d" % writer.get_extra_info("sockname")[:2]
        assert await read_to_eof(reader) == b""
        writer.close()
        await until(lambda: server.stats.idle_closed == 1, "not counted as idle")
    [record] = [r for r in caplog.records if "idle" in r.getMessage()]
    assert record.levelno == logging.INFO and peer in record.getMessage()


async def test_trickling_a_frame_that_never_completes_does_not_keep_a_connection_open():
    handler = EchoAck()
    async with serving(handler, idle_timeout=0.5) as server:
        reader, writer = await connect(server)
        writer.write(b"\x0bMSH|")
        closed = asyncio.create_task(read_to_eof(reader))
        while not closed.done():  # a byte now and then: bytes alone do not count as activity
            try:
                writer.write(b"x")
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait({closed}, timeout=0.05)
        await closed
        writer.close()
        await until(lambda: server.stats.partial_frames_dropped == 1, "the partial frame was not dropped")
    assert server.stats.idle_closed == 1 and handler.seen == []


async def test_a_sender_that_does_not_read_its_acks_is_dropped_after_the_idle_timeout():
    class Huge(EchoAck):
        async def handle(self, message: bytes) -> bytes:
            return b"MSH|" + b"x" * 4_000_000

    async with serving(Huge(), idle_timeout=0.5) as server:
        reader, writer = await connect(server)
        writer.write(b"".join(frame(message(f"S{i}")) for i in range(20)))  # 80 MB of ACKs, never read
        await until(lambda: server.stats.stalled_closed == 1, "the stalled connection was not dropped")
        await until(lambda: server.open_connections == 0, "the stalled connection is still open")
        writer.close()


# -- the handler's bugs --------------------------------------------------------------------------
async def test_a_handler_that_raises_gets_a_refusal_the_connection_continues_and_only_the_type_is_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="gateway.mllp")

    class Buggy(EchoAck):
        async def work(self, message: bytes) -> None:
            if control_id(message) == "BOOM":
                raise ValueError(f"cannot map {PNR}")

    handler = Buggy()
    async with serving(handler) as server, MllpClient(*server.address, timeout=PATIENCE) as client:
        refused = await client.send(message("BOOM"))
        after = await client.send(message("NEXT"))
    assert acked(refused) == ("AR", "BOOM") and handler.refused[0][1] == "internal error"
    assert acked(after) == ("AA", "NEXT") and server.stats.handler_errors == 1
    [record] = [r for r in caplog.records if "raised" in r.getMessage()]
    assert "ValueError" in record.getMessage() and PNR not in record.getMessage() and record.exc_info is None


async def test_a_refuse_that_raises_closes_only_that_connection():
    class Broken(EchoAck):
        async def work(self, message: bytes) -> None:
            raise RuntimeError("bug")

        def refuse(self, partial: bytes, reason: str) -> bytes:
            raise RuntimeError("bug too")

    async with serving(Broken()) as server:
        reader, writer = await connect(server)
        writer.write(frame(message("X")))
        assert await read_to_eof(reader) == b""
        writer.close()
        reader, writer = await connect(server)  # the listener is still there
        writer.close()


async def test_logs_never_carry_message_content(caplog):
    caplog.set_level(logging.DEBUG, logger="gateway.mllp")

    class Buggy(EchoAck):
        async def work(self, message: bytes) -> None:
            if control_id(message) == "BOOM":
                raise KeyError(f"{PNR} {NAME}")

    async with serving(Buggy(), max_message_bytes=2000, idle_timeout=0.5) as server:
        async with MllpClient(*server.address, timeout=PATIENCE) as client:
            await client.send(message("OK"))
            await client.send(message("BOOM"))
        for data in (b"\x0b" + message("BIG", padding=3000), b"\x0b" + message("HALF")[:60]):
            reader, writer = await connect(server)
            writer.write(data)
            await read_to_eof(reader)  # refused, or dropped at the idle timeout
            writer.close()
    assert len(caplog.records) >= 5
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert PNR not in text and NAME not in text and "BOOM" not in text and "MSH" not in text


# -- bounds and shutdown -------------------------------------------------------------------------
async def test_connections_beyond_the_bound_are_closed_at_once(caplog):
    caplog.set_level(logging.WARNING, logger="gateway.mllp")
    async with serving(EchoAck(), max_connections=2) as server:
        first, second = MllpClient(*server.address, timeout=PATIENCE), MllpClient(*server.address, timeout=PATIENCE)
        assert acked(await first.send(message("A")))[0] == acked(await second.send(message("B")))[0] == "AA"
        reader, writer = await connect(server)
        writer.write(frame(message("THIRD")))
        assert await read_to_eof(reader) == b""
        writer.close()
        assert server.stats.connections_refused == 1
        assert any("bound is 2" in r.getMessage() for r in caplog.records)
        await first.close()
        await until(lambda: server.open_connections == 1, "the closed connection is still counted")
        async with MllpClient(*server.address, timeout=PATIENCE) as third:
            assert acked(await third.send(message("C"))) == ("AA", "C")
        await second.close()


class Gate(EchoAck):
    """Holds message SLOW in the handler until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def work(self, message: bytes) -> None:
        if control_id(message) == "SLOW":
            self.entered.set()
            await self.release.wait()


async def refused_to_connect(server_address: tuple[str, int]) -> bool:
    try:
        _, writer = await asyncio.open_connection(*server_address)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_graceful_stop_lets_an_in_flight_message_finish_and_starts_nothing_behind_it():
    handler = Gate()
    async with serving(handler) as server:
        address = server.address
        idle = MllpClient(*address, timeout=PATIENCE)
        await idle.send(message("IDLE"))
        reader, writer = await connect(server)
        writer.write(frame(message("SLOW")) + frame(message("BEHIND")))
        await asyncio.wait_for(handler.entered.wait(), PATIENCE)
        stopping = asyncio.create_task(server.stop(timeout=PATIENCE))
        await until(lambda: server.open_connections == 1, "the idle connection was not closed at stop")
        async with asyncio.timeout(PATIENCE):
            while not await refused_to_connect(address):  # the listener closes at once (uvloop: next turn)
                await asyncio.sleep(0.01)
        assert not stopping.done()
        handler.release.set()
        received = await read_to_eof(reader)
        writer.close()  # as a sender does when the server closes: the server need not linger
        await asyncio.wait_for(stopping, PATIENCE)
        await idle.close()
    assert received == frame(ack("SLOW"))  # its ACK, and nothing for the frame behind it
    assert [control_id(m) for m in handler.seen] == ["IDLE", "SLOW"]


async def test_stop_cuts_off_a_handler_that_outlives_the_drain_timeout(caplog):
    caplog.set_level(logging.WARNING, logger="gateway.mllp")
    handler = Gate()
    async with serving(handler) as server:
        reader, writer = await connect(server)
        writer.write(frame(message("SLOW")))
        await asyncio.wait_for(handler.entered.wait(), PATIENCE)
        await asyncio.wait_for(server.stop(timeout=0.2), PATIENCE)
        assert await read_to_eof(reader) == b""
        writer.close()
    assert server.open_connections == 0 and handler.seen == []
    assert any("cut off" in r.getMessage() for r in caplog.records)


def test_the_listener_behaves_the_same_on_uvloop_which_gateway_mllp_runs():
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        handler = EchoAck()
        async with serving(handler, max_message_bytes=1000) as server:
            async with MllpClient(*server.address, timeout=PATIENCE) as client:
                assert [acked(r)[1] for r in await client.send_many(message(f"U{i}") for i in range(200))] == \
                    [f"U{i}" for i in range(200)]
            reader, writer = await connect(server)
            writer.write(b"\r\n" + b"\x0b" + message("HALF")[:30])
            writer.close()
            await until(lambda: server.stats.partial_frames_dropped == 1, "the partial frame was not dropped")
            reader, writer = await connect(server)
            writer.write(b"\x0b" + message("BIG", padding=5000))
            assert acked((await read_to_eof(reader))[1:-2]) == ("AR", "BIG")
            writer.close()
        assert len(handler.seen) == 200 and server.stats.bytes_skipped == 2

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
