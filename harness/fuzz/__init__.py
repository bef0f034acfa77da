"""The protocol fuzz lab: the mock EMS, the reference client and other TLS
stacks fed generated and mutated inputs over real loopback sockets.

* :mod:`harness.fuzz.server` attacks the mock EMS with TLS records and
  telemetry frames;
* :mod:`harness.fuzz.certs` serves mutated certificates to the reference
  client;
* :mod:`harness.fuzz.differential` serves the same certificates to several
  TLS stacks and records where they disagree;
* :mod:`harness.fuzz.findings` saves and replays what a campaign found.
"""
