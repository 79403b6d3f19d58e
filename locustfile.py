"""Chat login load harness: `locust -f locustfile.py` (web UI) or `--headless`.

Thin on purpose: the scenario Users come from scenarios/, everything else from harness/
(config, embedded target, journal, checks, gates, report). See README.md.
"""
import locust  # noqa: F401  (first: gevent monkey-patching before anything else)
from locust import events

from harness.runner.plugin import install
from scenarios import AccountSwitch, KickRace, MassLogin, ReloginExpiry  # noqa: F401  (the Users)

install(events)
