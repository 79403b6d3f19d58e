"""The simulated Chat SDK, protocol-free, over one driver (harness.sdk.driver)."""
