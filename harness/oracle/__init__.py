"""The oracle: the behaviour specification as pure functions.

It decides from declared properties (a kind's :class:`~harness.pki.LeafSpec`,
the CA roles, the scenario's settings) and never parses a certificate or
opens a socket.
"""
