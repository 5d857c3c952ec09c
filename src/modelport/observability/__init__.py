"""What the gateway tells its operators: metrics, traces, request logs, graceful shutdown."""
