"""The running coordinator: the websocket gateway, the scheduler, the validator (policy above
the store), validation rules, the console hub and telemetry."""
