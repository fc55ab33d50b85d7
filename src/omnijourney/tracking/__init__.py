"""What comes back from a message: signed tokens (``tokens``), the click and status
endpoint (``clicks``) and the bounce receiver (``bounces``). The email and SMS adapters
mint tokens; they never import the servers."""
