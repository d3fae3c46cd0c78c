# Type stub for the optional C extension built from native/httphead/httphead.c.

def scan_head(
    head: bytes, /
) -> tuple[bytes, list[tuple[bytes, bytes]], tuple[str, bytes] | None, int]: ...
