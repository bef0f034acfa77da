"""Mock EMS: settings model, TLS 1.3 endpoint-control server, telemetry framing."""
