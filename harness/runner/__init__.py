"""The Locust layer: options and run lifecycle (plugin), users (ChatUser/Device -> request event +
journal), the per-process runtime (pools, targets, credentials), distributed coordination, faults."""
