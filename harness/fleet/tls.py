"""Real TLS for the fleet: one mock EMS, one reference client per connection.

:class:`TlsConnector` starts a :class:`~harness.ems.server.MockEms` on
loopback, swaps its certificate and profile when the simulation requests it, and
connects each endpoint with its own
:class:`~harness.endpoint.client.EndpointClient`. Each endpoint keeps its
remembered certificates and received profile in its own file, as a real
client does, so state carries over from step to step through the client's
own storage.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path

from harness.ems.server import EndpointRecord, MockEms
from harness.endpoint.client import EndpointClient, PromptInfo
from harness.endpoint.memory import MemoryFile
from harness.fleet.model import Endpoint, FleetState
from harness.fleet.simulation import Observed, Presented
from harness.model import Action, Answer
from harness.oracle.decision import ExpectedOutcome
from harness.pki import Lab
from harness.pki.kinds import EMS_FQDN

logger = logging.getLogger(__name__)

# The mock protocol has no end-of-commands message, so a client waits this
# long after its last frame before it sends BYE. The fleet's EMS sends no
# commands, so the wait only delays the end of each session.
TELEMETRY_IDLE = 0.002


class TlsConnector:
    """Connect endpoints over real TLS 1.3 to one mock EMS on loopback.

    Args:
        lab: The lab whose trust store every endpoint uses.
        state_dir: Folder for the endpoints' files; a temporary folder that
            :meth:`close` removes if omitted.
        timeout: Seconds each client allows for connect, handshake and reads.
        trust_store: PEM bundle the endpoints trust; the lab's if omitted.
    """

    def __init__(
        self,
        lab: Lab,
        *,
        state_dir: Path | None = None,
        timeout: float = 10.0,
        trust_store: Path | None = None,
    ) -> None:
        self.trust_store = trust_store or lab.trust_store_path
        self.timeout = timeout
        self._owned_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="fleet-"))
        self._ems: MockEms | None = None
        self._lock = threading.Lock()
        self.handshakes = 0
        # The mock EMS's per-endpoint records, kept when the server stops.
        self.endpoint_records: dict[str, EndpointRecord] = {}

    @property
    def ems(self) -> MockEms:
        """The running mock EMS.

        Raises:
            RuntimeError: nothing was presented yet, so no server runs.
        """
        if self._ems is None:
            raise RuntimeError("the mock EMS starts with the first present() call")
        return self._ems

    def memory_path(self, endpoint: Endpoint) -> Path:
        """Return the file of ``endpoint``'s remembered certificates and profile."""
        return self.state_dir / f"{endpoint.endpoint_id}.json"

    def present(self, presented: Presented, profile_action: Action | None) -> None:
        if self._ems is None:
            self._ems = MockEms(
                presented.chain_pem,
                presented.key_pem,
                profile_action=profile_action,
                commands=(),
                idle_timeout=self.timeout,
            )
            self._ems.start()
            logger.info("fleet mock EMS listening on %s:%d", *self._ems.address)
        else:
            self._ems.set_certificate(presented.chain_pem, presented.key_pem)
            self._ems.set_profile_action(profile_action)

    def push_profile(self, endpoint: Endpoint, action: Action) -> None:
        MemoryFile(self.memory_path(endpoint)).set_profile(
            action, "default", EMS_FQDN, self.ems.port
        )

    def connect(
        self, endpoint: Endpoint, state: FleetState, expected: ExpectedOutcome
    ) -> Observed:
        answer = state.prompt_answer

        def prompt(info: PromptInfo) -> Answer:
            return answer

        client = EndpointClient(
            endpoint.version,
            self.trust_store,
            installer_action=endpoint.installer_action,
            memory_path=self.memory_path(endpoint),
            prompt=prompt,
            timeout=self.timeout,
            endpoint_id=endpoint.endpoint_id,
            telemetry_idle=TELEMETRY_IDLE,
        )
        ems = self.ems
        observation = client.connect(ems.host, ems.port, servername=EMS_FQDN)
        with self._lock:
            self.handshakes += 1
        return Observed(
            observation.connected,
            observation.prompted,
            observation.outcome.value,
            tuple(r.value for r in observation.reasons),
            observation.error if not observation.connected else None,
        )

    def close(self) -> None:
        if self._ems is not None:
            self.endpoint_records = self._ems.endpoints
            self._ems.stop()
            self._ems = None
        if self._owned_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
