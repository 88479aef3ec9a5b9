"""How a watch's body is cut into events (`modelyard.kube.watch.iter_lines`): the server writes one
JSON event per line, and the network cuts the body anywhere — as kopf's `test_iterjsonlines`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from modelyard.kube.watch import iter_lines


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def lines(*parts: bytes) -> list[bytes]:
    return [line async for line in iter_lines(chunks(*parts))]


async def test_no_chunks_are_no_lines() -> None:
    assert await lines() == []


async def test_empty_chunks_are_no_lines() -> None:
    assert await lines(b"", b"", b"") == []


async def test_one_chunk_one_line() -> None:
    assert await lines(b'{"a": 1}\n') == [b'{"a": 1}']


async def test_one_chunk_several_lines() -> None:
    assert await lines(b'{"a": 1}\n{"b": 2}\n{"c": 3}\n') == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']


async def test_a_line_split_across_chunks() -> None:
    assert await lines(b'{"a', b'": ', b"1}", b"\n") == [b'{"a": 1}']


async def test_a_line_split_byte_by_byte() -> None:
    body = b'{"a": 1}\n{"b": 2}\n'
    assert await lines(*(body[i : i + 1] for i in range(len(body)))) == [b'{"a": 1}', b'{"b": 2}']


async def test_a_chunk_ending_one_line_and_starting_the_next() -> None:
    assert await lines(b'{"a": 1}\n{"b"', b": 2}\n") == [b'{"a": 1}', b'{"b": 2}']


async def test_a_newline_alone_in_its_chunk_ends_the_line() -> None:
    assert await lines(b'{"a": 1}', b"\n", b'{"b": 2}', b"\n") == [b'{"a": 1}', b'{"b": 2}']


async def test_empty_chunks_between_parts_change_nothing() -> None:
    assert await lines(b'{"a"', b"", b": 1}", b"", b"\n", b"") == [b'{"a": 1}']


async def test_blank_lines_are_skipped() -> None:
    assert await lines(b'\n{"a": 1}\n\n  \n\r\n{"b": 2}\n\n') == [b'{"a": 1}', b'{"b": 2}']


async def test_a_carriage_return_is_left_to_the_json_parser() -> None:
    # json.loads ignores surrounding whitespace, so the line is not trimmed.
    assert await lines(b'{"a": 1}\r\n') == [b'{"a": 1}\r']


async def test_a_trailing_partial_line_is_dropped() -> None:
    """An event the connection cut short: the watch resumes from the last whole one."""
    assert await lines(b'{"a": 1}\n{"b": ', b"2}") == [b'{"a": 1}']


async def test_a_line_larger_than_readlines_limit_comes_whole() -> None:
    """aiohttp's readline gives up at 64 KiB; a pod with a long status is larger."""
    large = b'{"status": "' + b"x" * (256 << 10) + b'"}'
    parts = [large[i : i + 4096] for i in range(0, len(large), 4096)]
    assert await lines(*parts, b"\n", b'{"b": 2}\n') == [large, b'{"b": 2}']
