from __future__ import annotations

from agentwall.core.canonical import canonical_json


def test_sorted_compact_utf8() -> None:
    expected = '{"a":[true,null,"é"],"b":1}'.encode()
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == expected


def test_huge_integers_kept_exactly() -> None:
    big = 10**40
    assert canonical_json({"n": big}) == b'{"n":' + str(big).encode() + b"}"


def test_lone_surrogate_does_not_raise() -> None:
    assert canonical_json("\ud800") == '"\ud800"'.encode("utf-8", "surrogatepass")
