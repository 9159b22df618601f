"""MLLP framing rules (gateway/mllp/framing.py), without sockets."""
from __future__ import annotations

import pytest

from gateway.mllp.framing import Deframer, FrameTooLarge, frame


def messages(deframer: Deframer) -> list[bytes]:
    out = []
    while (m := deframer.next_message()) is not None:
        out.append(m)
    return out


def test_a_frame_is_start_block_message_end_block():
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\x0d"


def test_several_frames_in_one_read_come_out_in_order():
    d = Deframer(100)
    d.feed(frame(b"one") + frame(b"two") + frame(b"three"))
    assert messages(d) == [b"one", b"two", b"three"]


def test_a_frame_split_at_every_byte_comes_out_whole():
    d, out = Deframer(100), []
    for byte in frame(b"MSH|^~\\&|a\rPID|1\r") + frame(b"next"):
        d.feed(bytes([byte]))
        out += messages(d)
    assert out == [b"MSH|^~\\&|a\rPID|1\r", b"next"]
    assert d.partial_bytes == 0 and d.skipped == 0


def test_bytes_before_a_start_block_are_skipped_and_counted():
    d = Deframer(100)
    d.feed(b"garbage\r\n" + frame(b"one") + b"\r\n" + frame(b"two") + b"\n")
    assert messages(d) == [b"one", b"two"]
    assert d.skipped == len(b"garbage\r\n") + 2 + 1


def test_an_end_block_byte_without_its_carriage_return_is_part_of_the_message():
    d = Deframer(100)
    d.feed(b"\x0bab\x1ccd\x1c\x0d")
    assert messages(d) == [b"ab\x1ccd"]


def test_a_start_block_inside_a_frame_is_part_of_the_message_so_every_frame_gets_one_reply():
    d = Deframer(100)
    d.feed(b"\x0bfirst\x0bsecond\x1c\x0d")
    assert messages(d) == [b"first\x0bsecond"]


def test_a_message_of_exactly_the_limit_is_accepted():
    d = Deframer(10)
    d.feed(frame(b"0123456789"))
    assert messages(d) == [b"0123456789"]


def test_a_message_of_the_limit_waiting_for_its_last_end_byte_is_not_refused():
    d = Deframer(10)
    d.feed(b"\x0b0123456789\x1c")
    assert d.next_message() is None
    d.feed(b"\x0d")
    assert d.next_message() == b"0123456789"


def test_a_complete_frame_over_the_limit_is_refused():
    d = Deframer(10)
    d.feed(frame(b"0123456789A"))
    with pytest.raises(FrameTooLarge) as refused:
        d.next_message()
    assert refused.value.partial == b"0123456789" and refused.value.limit == 10


def test_a_frame_that_never_ends_is_refused_once_it_passes_the_limit_and_the_buffer_stays_bounded():
    limit, chunk = 100_000, 65_536
    d = Deframer(limit)
    d.feed(b"\x0bMSH|^~\\&|")
    with pytest.raises(FrameTooLarge) as refused:
        while True:
            assert d.next_message() is None
            d.feed(b"x" * chunk)
    assert d.buffered <= limit + 1 + chunk  # the limit plus one read
    assert refused.value.partial.startswith(b"MSH|^~\\&|") and len(refused.value.partial) == limit


def test_a_partial_frame_is_reported_as_such():
    d = Deframer(100)
    d.feed(frame(b"done") + b"\x0bhalf")
    assert messages(d) == [b"done"]
    assert d.partial_bytes == 4
