"""The SIP edge: transports, registrar, digest auth and the proxy core (pure Python)."""
