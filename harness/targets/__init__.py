"""What the harness can start besides its reference server: real XMPP servers (ejabberd, Prosody).

Import the classes from ``harness.targets.xmpp_servers``; importing this package starts nothing.
"""
