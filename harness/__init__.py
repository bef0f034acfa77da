"""Test harness and protocol fuzz lab for endpoint-control certificate checks.

The package has four roles, kept apart on purpose:

* the lab (:mod:`harness.pki`, :mod:`harness.ems`) builds certificates and
  serves them over real TLS 1.3;
* the oracle (:mod:`harness.oracle`) decides from declared properties what a
  client must do;
* the clients under test (:mod:`harness.endpoint`, :mod:`harness.adapters`)
  decide from the bytes they receive;
* the suites and reports compare the two.

The oracle and the clients share data types and the version table, never
decision code.
"""

__version__ = "0.1.0"
