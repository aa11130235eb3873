"""Media workers: the only place in softswitch that runs pjsua2.

Each worker is a separate process (see ``worker.py`` and ``docs/worker-protocol.md``)
because the pjsua2 wheel allows one endpoint and four calls per process. The
coordinator drives workers over a JSON-lines control socket and never imports pjsua2
itself, so importing this package must not import pjsua2 either.
"""
