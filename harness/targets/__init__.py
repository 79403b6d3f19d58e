"""What the harness can start or point at: the embedded reference server (server/, embedded.py),
real XMPP servers, the TCP fault proxy; each with start / wait / accounts / stop."""
