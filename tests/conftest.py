"""Suite-wide settings."""

from hypothesis import HealthCheck, settings

# Hypothesis's default 200 ms deadline per example is a timed assertion: on a
# loaded or throttled CI host a correct example can take longer and fail the
# run as "flaky".  Speed is measured in bench/, never asserted here.
settings.register_profile("agentwall", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("agentwall")
