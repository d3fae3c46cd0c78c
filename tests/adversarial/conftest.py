"""Fixtures for the red-team tests; the harness itself is adv_harness.py (a
uniquely named module: several test folders have a conftest.py)."""

from adv_harness import wrapped

__all__ = ["wrapped"]
