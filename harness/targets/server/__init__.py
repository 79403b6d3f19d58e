"""Reference login server (asyncio + aiohttp) implementing shared PROTOCOL.md.

Run it with ``python -m harness.server --port 0 --secret-key KEY`` (see ``__main__``).
Modules: ``settings`` (ServerSettings), ``core`` (sans-IO Hub: sessions, policy, expiry,
lockout, faults), ``rest`` (REST v4, sans-IO), ``ledger`` (PROTOCOL.md section 7),
``wsguard`` (RFC 6455 checks aiohttp lacks: masked client frames, lingering close),
``app`` (aiohttp shell and lifecycle).
"""
